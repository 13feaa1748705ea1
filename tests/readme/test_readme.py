"""The README is tested: every ``console`` block runs as shown (tests/support/readme_console.py).

Each walk is the README's sequence of blocks for one folder (the notebook walk, Designer,
AutoML, the release walk, the MLproject entry points, the demo), run top to bottom in a
fresh temporary folder with the installed ``lifecycle`` on ``PATH``. A README example
that stops working, or whose shown output is no longer what the command prints, fails here.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.readme_console import Walk, run_walk, walks

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
REAL = REPO / "tests" / "fixtures" / "real"


def _designer(cwd: Path) -> None:
    """Designer's Train Model output, as the user downloads it: a folder and its zip."""
    shutil.copytree(
        REAL / "designer" / "binary_logreg" / "trained_model_outputs", cwd / "trained_model_outputs"
    )
    with zipfile.ZipFile(cwd / "trained_model_outputs.zip", "w") as archive:
        for path in sorted((cwd / "trained_model_outputs").rglob("*")):
            archive.write(path, path.relative_to(cwd))


def _automl(cwd: Path) -> None:
    """An AutoML run's ``outputs/`` folder and rows it was not trained on."""
    case = REAL / "automl" / "classification_lightgbm"
    shutil.copytree(case / "outputs", cwd / "outputs")
    shutil.copy(case / "holdout.csv", cwd / "holdout.csv")


def _mlproject(cwd: Path) -> None:
    """The user runs ``mlflow run .`` in their clone of this repository."""
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(REPO / name, cwd / name)


SETUPS: dict[str, Callable[[Path], None]] = {
    "designer": _designer,
    "automl": _automl,
    "mlproject": _mlproject,
}


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LIFECYCLE_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        LIFECYCLE_CACHE_DIR=str(root / "cache"),
        LIFECYCLE_USER="root",  # the README's outputs show the user who ran them
        GIT_PYTHON_REFRESH="quiet",
        COLUMNS="100",
    )
    if "LIFECYCLE_ENV_CACHE" in os.environ:  # model environments: the machine's cache
        env["LIFECYCLE_ENV_CACHE"] = os.environ["LIFECYCLE_ENV_CACHE"]
    return env


@pytest.mark.slow
@pytest.mark.parametrize("name", walks(README))
def test_readme_walk(name: str, tmp_path: Path) -> None:
    root = tmp_path
    walk = Walk(root=root, env=_env(root), setups=SETUPS)
    walk.ids["/path/to/this/repo"] = str(REPO)  # the README's placeholder for the clone
    run_walk(README, name, walk)
