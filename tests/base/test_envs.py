"""Model environments from a model's own requirements.txt, built offline from a wheelhouse
(``lifecycle env prepare --find-links``), cached by the spec's hash, chosen by
``--env-manager``; data crosses to the worker as Arrow with NaN and None kept apart.

The model's one requirement the toolkit's environment lacks is a small package built here
as a wheel (``lifecycle-toy-dep``); numpy, pandas and pyarrow wheels are taken from the
package index once per machine and kept (like every other install ``make test`` makes)."""

from __future__ import annotations

import json
import time
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
from tests.support.toy_env import build_wheelhouse, save_toy_model


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy, pandas, pyarrow (the toolkit's versions) and the toy package, as wheels."""
    return build_wheelhouse(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "envs"
    monkeypatch.setenv("LIFECYCLE_ENV_CACHE", str(cache))
    return cache


@pytest.fixture
def toy_model(tmp_path: Path) -> Path:
    return save_toy_model(tmp_path)


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


def test_closing_a_worker_does_not_wait_for_its_slow_teardown(
    toy_model: Path, wheelhouse: Path, env_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker asked to close whose interpreter teardown takes long (AutoML's takes ~2 s)
    is killed after a short grace: the command that used it ends now, and no process is
    left behind."""
    args = ["env", "prepare", str(toy_model), "--find-links", str(wheelhouse)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    monkeypatch.setenv("TOY_SLOW_EXIT_S", "60")
    model = load_pyfunc(str(toy_model))
    worker = worker_of(model)
    assert worker is not None and worker.pid is not None
    assert model.predict(pd.DataFrame({"x": [1.0]}))["x"].tolist() == ["float"]
    proc = worker._proc
    assert proc is not None
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 5  # not the 60 s teardown (nor a 10 s timeout)
    assert proc.poll() is not None  # exited and reaped


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
