"""A model whose one requirement the toolkit's environment lacks (``lifecycle-toy-dep``, a
small package built here as a wheel), and a wheelhouse to build its environment offline:
numpy, pandas and pyarrow wheels (the toolkit's versions) taken from the package index once
per machine and kept, like every other install ``make test`` makes."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

TOY_DEP = '''
def describe(value):
    """What crossed: 'nan' for a float NaN, 'None' for None, else the type's name."""
    if value is None:
        return "None"
    if isinstance(value, float) and value != value:
        return "nan"
    return type(value).__name__
'''
LOADER = """
import pandas as pd
import lifecycle_toy_dep


class Toy:
    def predict(self, data, params=None):
        out = pd.DataFrame({c: [lifecycle_toy_dep.describe(v) for v in data[c]] for c in data})
        out["scale"] = (params or {}).get("scale", 1.0) * data["x"].astype(float)
        return out


def _load_pyfunc(path):
    import atexit, os, time

    slow = os.environ.get("TOY_SLOW_EXIT_S")  # a runtime whose teardown takes long
    if slow:
        atexit.register(time.sleep, float(slow))
    return Toy()
"""
_WHEELS = ("numpy", "pandas", "pyarrow")
#: MLflow's python_env.yaml pins these build tools to the saving environment's versions.
_BUILD = ("pip", "setuptools")


def _cache() -> Path:
    """Where the wheelhouse is kept, keyed by the versions and the toy's source."""
    versions = [f"{d}=={importlib.metadata.version(d)}" for d in (*_WHEELS, *_BUILD)]
    key = hashlib.sha256(("\n".join(versions) + TOY_DEP).encode()).hexdigest()[:12]
    base = Path.home() / ".cache" / "mlflow-lifecycle" / f"test-wheelhouse-{key}"
    return base


def build_wheelhouse(scratch: Path) -> Path:
    """numpy, pandas, pyarrow (the toolkit's versions) and the toy package, as wheels (built
    once per machine and kept; ``scratch`` holds the toy's source meanwhile)."""
    from filelock import FileLock

    house = _cache()
    house.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(house) + ".lock"):
        if (house / ".complete").is_file():
            return house
        house.mkdir(exist_ok=True)
        versions = [f"{d}=={importlib.metadata.version(d)}" for d in (*_WHEELS, *_BUILD)]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "download", "--only-binary=:all:", "-d", str(house), *versions, "wheel"],
                       check=True, capture_output=True)  # fmt: skip
        src = scratch / "toy-src"
        src.mkdir(parents=True, exist_ok=True)
        (src / "lifecycle_toy_dep.py").write_text(TOY_DEP)
        (src / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
            '[project]\nname = "lifecycle-toy-dep"\nversion = "1.0"\n'
            '[tool.setuptools]\npy-modules = ["lifecycle_toy_dep"]\n'
        )
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(house),
                        str(src)], check=True, capture_output=True)  # fmt: skip
        (house / ".complete").write_text("")
    return house


def save_toy_model(tmp_path: Path) -> Path:
    """The toy model (a loader module, no pickle) with ``lifecycle-toy-dep`` in its
    requirements.txt: it can only run in its own environment."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    code = tmp_path / "toy_loader.py"
    code.write_text(LOADER)
    model = tmp_path / "toy-model"
    # No input schema (MLflow's enforcement would turn None into NaN in a text column).
    signature = ModelSignature(inputs=None, params=ParamSchema([ParamSpec("scale", "double", 1.0)]))
    mlflow.pyfunc.save_model(
        str(model), loader_module="toy_loader", code_paths=[str(code)], signature=signature
    )
    pins = [f"{d}=={importlib.metadata.version(d)}" for d in _WHEELS]
    (model / "requirements.txt").write_text("\n".join(["lifecycle-toy-dep==1.0", *pins]) + "\n")
    return model
