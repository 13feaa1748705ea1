"""Benchmark: the image ``lifecycle package --build`` makes against the one MLflow's own
``mlflow models generate-dockerfile`` describes (what ``build-docker`` builds), same model,
same run, same base (issue #19).

No image registry is reachable here, and ``build-docker`` needs a Docker engine: both images
are built with buildah on the same local Debian bookworm base made with debootstrap
(tests/support/images.py). MLflow's Dockerfile starts ``FROM python:3.11.7-slim``; on the local
base that line becomes a Python 3.11 virtual environment on ``PATH`` (what the slim image
provides: ``python`` and ``pip``), everything after it unchanged (nginx from Debian, ``pip install
mlflow``, the model's requirements). Sizes are what ``podman image inspect`` reports, and the
base's own size is given so the layers each tool adds can be compared.

Usage::

    python -m bench.bench_image [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_serve import build_model

_SLIM_STANDIN = "RUN python3 -m venv /opt/python\nENV PATH=/opt/python/bin:$PATH\n"
#: MLflow's image installs from the package index at build time (ours from its wheelhouse):
#: on a network whose TLS is intercepted it needs this machine's CA bundle, as pip here does.
_HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _size(image: str) -> int:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def _buildah(context: Path, tag: str, log: Path) -> float:
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--format",
             "docker", "--layers", "-t", tag, str(context)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"building {tag} failed: {log.read_text()[-2000:]}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    args = parser.parse_args(argv)
    for tool in ("buildah", "podman", "debootstrap"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install -y buildah podman runc debootstrap")
            return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.images import base_image

    base = base_image()
    root = Path(tempfile.mkdtemp(prefix="bench-image-"))
    model = build_model(root)
    bin_dir = Path(sys.executable).parent
    env_cwd = {"cwd": root}

    ours_tag, theirs_tag = "localhost/bench-lifecycle:1", "localhost/bench-mlflow:1"
    t0 = time.monotonic()
    subprocess.run(
        [str(bin_dir / "lifecycle"), "package", "models:/bench_lr/1", "-w", "dev", "--out",
         str(root / "ours"), "--image", ours_tag, "--base", base, "--build"],
        check=True, **env_cwd,  # type: ignore[arg-type]
    )  # fmt: skip
    ours_s = time.monotonic() - t0

    subprocess.run(
        [str(bin_dir / "mlflow"), "models", "generate-dockerfile", "-m", str(model), "-d",
         str(root / "theirs"), "--env-manager", "local"],
        check=True, capture_output=True,
    )  # fmt: skip
    dockerfile = root / "theirs" / "Dockerfile"
    lines = dockerfile.read_text().splitlines(keepends=True)
    i = next(n for n, ln in enumerate(lines) if ln.startswith("FROM "))
    standin = [f"FROM {base}\n", _SLIM_STANDIN]
    if _HOST_CA.is_file():
        shutil.copy(_HOST_CA, root / "theirs" / "host-ca.crt")
        standin += ["COPY host-ca.crt /opt/host-ca.crt\n", "ENV PIP_CERT=/opt/host-ca.crt\n"]
    lines[i : i + 1] = standin
    dockerfile.write_text("".join(lines))
    theirs_s = _buildah(root / "theirs", theirs_tag, root / "theirs.log")

    sizes = {"base": _size(base), "ours": _size(ours_tag), "mlflow": _size(theirs_tag)}
    results = {
        "sizes_bytes": sizes,
        "build_seconds": {"ours_package_and_build": round(ours_s, 1), "mlflow": round(theirs_s, 1)},
        "ratio": round(sizes["ours"] / sizes["mlflow"], 2),
        "added_ratio": round(
            (sizes["ours"] - sizes["base"]) / (sizes["mlflow"] - sizes["base"]), 2
        ),
    }
    mb = {k: f"{v / 1e6:.0f} MB" for k, v in sizes.items()}
    print(
        f"base {mb['base']}; lifecycle package {mb['ours']}; mlflow generate-dockerfile "
        f"{mb['mlflow']}; ratio {results['ratio']} (layers added: {results['added_ratio']}); "
        f"build {results['build_seconds']}"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    for tag in (ours_tag, theirs_tag):
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
