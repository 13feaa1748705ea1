"""Model environments from a model's own requirements.txt, built offline from a wheelhouse
(``lifecycle env prepare --find-links``), cached by the spec's hash, chosen by
``--env-manager``; data crosses to the worker as Arrow with NaN and None kept apart.

The model's one requirement the toolkit's environment lacks is a small package built here
as a wheel (``lifecycle-toy-dep``); numpy, pandas and pyarrow wheels are taken from the
package index once per machine and kept (like every other install ``make test`` makes)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lifecycle.base.env_proxy import worker_of
from lifecycle.base.envs import choose_env_manager, env_path, read_spec
from lifecycle.base.errors import InvalidArgumentError, ModelEnvError
from lifecycle.base.loader import load_pyfunc
from lifecycle.cli import cli

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
    return Toy()
"""
_WHEELS = ("numpy", "pandas", "pyarrow")
#: MLflow's python_env.yaml pins these build tools to the saving environment's versions.
_BUILD = ("pip", "setuptools")


def _cache() -> Path:
    versions = [f"{d}=={importlib.metadata.version(d)}" for d in (*_WHEELS, *_BUILD)]
    key = hashlib.sha256(("\n".join(versions) + TOY_DEP).encode()).hexdigest()[:12]
    base = Path.home() / ".cache" / "mlflow-lifecycle" / f"test-wheelhouse-{key}"
    return base


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy, pandas, pyarrow (the toolkit's versions) and the toy package, as wheels."""
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
        src = tmp_path_factory.mktemp("toy")
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


@pytest.fixture
def env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "envs"
    monkeypatch.setenv("LIFECYCLE_ENV_CACHE", str(cache))
    return cache


@pytest.fixture
def toy_model(tmp_path: Path) -> Path:
    import mlflow.pyfunc

    code = tmp_path / "toy_loader.py"
    code.write_text(LOADER)
    model = tmp_path / "toy-model"
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    # No input schema (MLflow's enforcement would turn None into NaN in a text column).
    signature = ModelSignature(inputs=None, params=ParamSchema([ParamSpec("scale", "double", 1.0)]))
    mlflow.pyfunc.save_model(
        str(model), loader_module="toy_loader", code_paths=[str(code)], signature=signature
    )
    pins = [f"{d}=={importlib.metadata.version(d)}" for d in _WHEELS]
    (model / "requirements.txt").write_text("\n".join(["lifecycle-toy-dep==1.0", *pins]) + "\n")
    return model


def test_model_whose_requirement_is_missing_here_runs_in_its_own_environment(
    toy_model: Path, wheelhouse: Path, env_cache: Path
) -> None:
    spec = read_spec(toy_model)
    assert spec is not None and spec.name == "requirements"
    assert choose_env_manager(toy_model, "auto") == spec  # lifecycle-toy-dep is not here
    with pytest.raises(ModelEnvError, match=r"not prepared .*lifecycle env prepare"):
        load_pyfunc(str(toy_model))

    args = ["env", "prepare", str(toy_model), "--find-links", str(wheelhouse), "--json"]
    built = CliRunner().invoke(cli, args)
    assert built.exit_code == 0, built.output
    first = json.loads(built.stdout)
    assert first["cached"] is False and first["path"] == str(env_path(spec))
    again = json.loads(CliRunner().invoke(cli, args).stdout)
    assert again["cached"] is True and again["seconds"] < 1

    model = load_pyfunc(str(toy_model))
    assert worker_of(model) is not None
    data = pd.DataFrame(
        {
            "x": [1.0, 2.5, np.nan],
            "s": pd.Series(["a", None, np.nan], dtype=object),
            "n": [1, 2, 3],
        }
    )
    got = model.predict(data, params={"scale": 2.0})
    assert got["s"].tolist() == ["str", "None", "nan"]  # NaN and None kept apart
    assert got["x"].tolist() == ["float", "float", "nan"]
    assert got["n"].tolist() == ["int", "int", "int"]
    np.testing.assert_array_equal(got["scale"].to_numpy(), [2.0, 5.0, np.nan])
    worker_of(model).close()  # type: ignore[union-attr]


def test_local_env_manager_loads_here_and_fails_on_the_missing_module(
    toy_model: Path, env_cache: Path
) -> None:
    with pytest.raises(ModuleNotFoundError, match="lifecycle_toy_dep"):
        load_pyfunc(str(toy_model), env_manager="local").predict(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(InvalidArgumentError, match="--env-manager 'conda' is not one of"):
        load_pyfunc(str(toy_model), env_manager="conda")


def test_failed_build_names_the_step_and_leaves_nothing_that_looks_built(
    toy_model: Path, wheelhouse: Path, env_cache: Path, tmp_path: Path
) -> None:
    (toy_model / "requirements.txt").write_text("lifecycle-toy-dep==9.9\n")
    spec = read_spec(toy_model)
    assert spec is not None
    args = ["env", "prepare", str(toy_model), "--find-links", str(wheelhouse)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "pip install -r requirements.txt" in line and "lifecycle-toy-dep==9.9" in line
    assert not (env_path(spec) / ".complete").exists()
    with pytest.raises(ModelEnvError, match="not prepared"):
        load_pyfunc(str(toy_model))
