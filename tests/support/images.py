"""Container images for the packaging tests: a base image made on this machine (Debian's
debootstrap, so no image registry is needed), and ``podman run`` with the flags a sandboxed
machine needs.

The base is Debian bookworm's minimal system with ``python3`` and ``python3-venv`` (Python
3.11, the toolkit's), imported into the local image store as
``localhost/lifecycle-test-base:bookworm-<hash of this recipe>`` and reused while it exists.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import FileLock

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Tried in order: plain, then what a gVisor-like sandbox needs (runc instead of crun, which
#: refuses hybrid cgroups; limits it may set; the host's network).
RUN_FLAVOURS: tuple[tuple[str, ...], ...] = (
    ("--network", "host"),
    (
        "--runtime",
        "runc",
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ),
)


def why_no_containers() -> str | None:
    """None when podman, buildah (or podman alone) and debootstrap are installed, else why not."""
    missing = [t for t in ("podman", "debootstrap") if shutil.which(t) is None]
    if missing:
        return (
            f"not installed: {', '.join(missing)} (apt-get install buildah podman runc debootstrap)"
        )
    return None


def base_image(log=print) -> str:  # type: ignore[no-untyped-def]
    """The local base image (built on first use; ~40 s and ~100 MB of Debian packages)."""
    recipe = hashlib.sha256(repr((SUITE, MIRROR, PACKAGES)).encode()).hexdigest()[:12]
    name = f"localhost/lifecycle-test-base:{SUITE}-{recipe}"
    lock = Path(tempfile.gettempdir()) / f"lifecycle-test-base-{recipe}.lock"
    with FileLock(str(lock)):
        if subprocess.run(["podman", "image", "exists", name]).returncode == 0:
            return name
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="lifecycle-rootfs-") as tmp:
            root = Path(tmp) / "rootfs"
            log(f"making the test base image {name} with debootstrap (first time only)")
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                 str(root), MIRROR],
                check=True, capture_output=True,
            )  # fmt: skip
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                ["podman", "import", "--change", "CMD=/bin/bash", "-", name],
                stdin=tar.stdout, check=True, capture_output=True,
            )  # fmt: skip
            tar.wait()
        log(f"made {name} in {time.monotonic() - t0:.0f} s")
    return name


def run_detached(image: str, env: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    """Start ``image`` in the background; returns (container id, the flags that worked).

    Raises:
        RuntimeError: no flavour of ``podman run`` could start it (each one's last line).
    """
    errors = []
    for flags in RUN_FLAVOURS:
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        proc = subprocess.run(
            ["podman", "run", "-d", *flags, *env_args, image], capture_output=True, text=True
        )
        if proc.returncode == 0:
            return proc.stdout.strip(), flags
        errors.append(f"{' '.join(flags)}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        subprocess.run(["podman", "rm", "-f", proc.stdout.strip()], capture_output=True)
    raise RuntimeError("podman could not run the image: " + " | ".join(errors))


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    """``podman ARGS``, output captured."""
    return subprocess.run(["podman", *args], capture_output=True, text=True)
