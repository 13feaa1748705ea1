"""The demo runs from a built wheel, installed into a fresh virtual environment outside the
checkout: it needs nothing from ``tests/`` and nothing from the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installed_demo_runs_all_six_scenarios(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(dist), str(REPO)),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    # setuptools warns of what it will refuse (a table `license`, sample-data folders that
    # look like packages); a new user's first `make demo` shows its build output.
    assert "BuildBackendWarning" not in build.stderr, build.stderr[-3000:]
    (wheel,) = dist.glob("mlflow_lifecycle-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The toolkit's dependencies come from this environment's site-packages, added after the
    # fresh one's own: a plain path entry, so this environment's editable install of the
    # toolkit (a .pth hook) is not active there; the toolkit itself comes from the wheel.
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_toolkit_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIFECYCLE_CONFIG")}
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import lifecycle, importlib.util as u; "
            "print(lifecycle.__file__); print(u.find_spec('tests'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    ).stdout.split()
    assert where[0].startswith(str(site)), where
    assert where[1] == "None", "the test suite must not be importable from the wheel's venv"

    demo = subprocess.run(
        [str(venv / "bin" / "lifecycle"), "demo", "--dir", str(work / "demo")],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    rows = [ln for ln in demo.stdout.splitlines() if " x real-time " in ln or " x batch " in ln]
    assert len(rows) == 6, demo.stdout
    assert all(ln.rstrip().endswith("yes") for ln in rows), demo.stdout
