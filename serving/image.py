"""Building an OCI image from a ``lifecycle package`` context with buildah or podman (the
Debian packages), whichever works on this machine.

Both are tried in that order; a tool that is installed but cannot build here (no user
namespaces, no storage driver) is reported with its own last line, and the next is tried.
With neither, :func:`build_image` says which tools are missing or failing and how to get
them. Nothing here talks to a registry unless the base image is not on the machine yet, in
which case the tool pulls it as it would for any build.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifecycle.base.errors import PackagingError

logger = logging.getLogger(__name__)

#: Tried in this order.
BUILDERS = ("buildah", "podman")


@dataclass(frozen=True)
class Built:
    """An image a builder made."""

    image: str
    builder: str
    image_id: str
    size_bytes: int | None


def build_command(builder: str, context: Path, image: str, base: str | None) -> list[str]:
    """The command that builds ``context`` as ``image`` with ``builder``.

    ``--isolation chroot`` runs the Dockerfile's RUN steps without an OCI runtime, so a
    build works in containers and sandboxes where a runtime cannot start (it is what
    buildah's own container images use); the steps run as the Dockerfile says either way.
    """
    cmd = [builder, "bud" if builder == "buildah" else "build", "--isolation", "chroot"]
    # Docker's image format: OCI's has no HEALTHCHECK, and the Dockerfile's would be dropped.
    cmd += ["--format", "docker", "--layers", "-t", image]
    if base:
        cmd += ["--build-arg", f"BASE={base}"]
    if builder == "podman":
        cmd += ["--pull=missing"]
    else:
        cmd += ["--pull-never"] if _local_image(builder, base) else []
    return [*cmd, str(context)]


def _local_image(builder: str, base: str | None) -> bool:
    if not base:
        return False
    probe = subprocess.run(
        [builder, "inspect", "--type", "image", base], capture_output=True, text=True
    )
    return probe.returncode == 0


def build_image(
    context: str | Path,
    image: str,
    *,
    base: str | None = None,
    log: Callable[[str], None] = logger.info,
) -> Built:
    """Build ``context`` (a ``lifecycle package`` folder) as ``image``.

    Raises:
        PackagingError: neither buildah nor podman is installed, or neither could build
            here (each one's reason in the message), or the Dockerfile's build failed.
    """
    ctx = Path(context)
    if not (ctx / "Dockerfile").is_file():
        raise PackagingError(f"'{ctx}' has no Dockerfile; expected a `lifecycle package` folder")
    reasons = []
    for builder in BUILDERS:
        if shutil.which(builder) is None:
            reasons.append(f"{builder}: not installed")
            continue
        cmd = build_command(builder, ctx, image, base)
        log(f"building {image} with {builder}: {' '.join(cmd)}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        if proc.returncode == 0:
            return Built(image, builder, _image_id(builder, image), image_size(builder, image))
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        if _cannot_run_here(proc.stderr):
            reasons.append(f"{builder}: cannot build on this machine ({last[0]})")
            continue
        raise PackagingError(f"{builder} failed to build {image}: {last[0]}")
    raise PackagingError(
        "Cannot build an image: "
        + "; ".join(reasons)
        + " (install one: apt-get install buildah, or apt-get install podman)"
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("BUILDAH_ISOLATION", "chroot")
    return env


_HOST_FAILURES = (
    "user namespaces",
    "newuidmap",
    "operation not permitted",
    "permission denied",
    "cannot set up namespace",
    "kernel does not support overlay",
    "error creating overlay mount",
)


def _cannot_run_here(stderr: str) -> bool:
    """The tool failed because of the machine, not because of the Dockerfile."""
    text = stderr.lower()
    return not any(s in text for s in ("step ", "error building at step")) and any(
        s in text for s in _HOST_FAILURES
    )


def _image_id(builder: str, image: str) -> str:
    proc = subprocess.run(
        [builder, "inspect", "--type", "image", "--format", "{{.Id}}", image]
        if builder == "podman"
        else [builder, "inspect", "--type", "image", "--format", "{{.FromImageID}}", image],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip()


def image_size(builder: str, image: str) -> int | None:
    """The image's size in bytes as the builder reports it (None when it cannot say)."""
    tool = "podman" if shutil.which("podman") else builder
    proc = subprocess.run(
        [tool, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True
    )
    try:
        return int(proc.stdout.strip())
    except ValueError:
        return None
