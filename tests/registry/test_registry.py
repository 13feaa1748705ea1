"""Atomic, idempotent registration into real SQLite stores and a real mlflow server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pytest

from lifecycle.base.digest import model_digest
from lifecycle.base.errors import ModelImportError, PromotionError
from lifecycle.base.refs import search_versions
from lifecycle.base.tags import DIGEST_TAG
from lifecycle.base.workspaces import Workspace, use_workspace
from lifecycle.registry.versions import log_and_register
from tests.support.mlflow_models import save_sklearn_model


@pytest.fixture
def model_dir(tmp_path: Path, fitted_logreg: Any, breast_cancer: Any) -> Path:
    X, _ = breast_cancer
    return save_sklearn_model(fitted_logreg, tmp_path / "model", X.head(5))


@pytest.mark.parametrize("target", ["dev", "remote"])
def test_register_loads_and_predicts(
    request: pytest.FixtureRequest,
    target: str,
    model_dir: Path,
    breast_cancer: Any,
    fitted_logreg: Any,
) -> None:
    ws: Workspace = request.getfixturevalue(target)
    name = f"reg-{target}-{request.node.name[-8:].strip('[]')}"
    reg = log_and_register(
        ws,
        model_dir,
        name,
        experiment="t",
        params={"C": 1.0},
        metrics={"auc": 0.99},
        trust_pickle=True,
    )
    assert reg.created and reg.version == "1"
    assert (
        reg.source.endswith("/model")
        and ws.client().get_run(reg.run_id).data.metrics["auc"] == 0.99
    )
    X, _ = breast_cancer
    with use_workspace(ws):
        model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    np.testing.assert_array_equal(model.predict(X.head(20)), fitted_logreg.predict(X.head(20)))
    mv = ws.client().get_model_version(name, "1")
    assert mv.tags[DIGEST_TAG] == model_digest(model_dir)


def test_register_is_idempotent_unless_forced(dev: Workspace, model_dir: Path) -> None:
    first = log_and_register(dev, model_dir, "idem", experiment="t", trust_pickle=True)
    again = log_and_register(dev, model_dir, "idem", experiment="t", trust_pickle=True)
    assert not again.created and again.version == first.version
    forced = log_and_register(dev, model_dir, "idem", experiment="t", force=True, trust_pickle=True)
    assert forced.created and forced.version == "2"


def test_failure_before_registration_leaves_nothing(dev: Workspace, model_dir: Path) -> None:
    def boom(run_id: str) -> None:
        raise OSError("disk full (injected)")

    with pytest.raises(PromotionError, match="rolled back: OSError: disk full"):
        log_and_register(
            dev, model_dir, "atomic", experiment="t", before_register=boom, trust_pickle=True
        )
    client = dev.client()
    assert client.search_registered_models(filter_string="name='atomic'") == []
    exp = client.get_experiment_by_name("t")
    assert client.search_runs([exp.experiment_id]) == []  # the run was deleted
    # The same call succeeds afterwards.
    assert (
        log_and_register(dev, model_dir, "atomic", experiment="t", trust_pickle=True).version == "1"
    )
    assert len(search_versions(dev, "atomic")) == 1


def test_not_a_model_dir(dev: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="is not an MLflow model directory"):
        log_and_register(dev, tmp_path, "x", experiment="t", trust_pickle=True)


def test_digest_ignores_volatile_mlmodel_fields(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    text = (copy / "MLmodel").read_text()
    (copy / "MLmodel").write_text(text + "run_id: abc\nutc_time_created: '2030-01-01'\n")
    assert model_digest(copy) == model_digest(model_dir)
    (copy / "extra.txt").write_text("x")
    assert model_digest(copy) != model_digest(model_dir)


def test_the_digest_ignores_bytecode_written_by_importing_the_model_in_place(
    model_dir: Path,
) -> None:
    """Loading a local store's model imports its code in place, and Python writes
    ``__pycache__`` beside it: that must not make the files look tampered with."""
    before = model_digest(model_dir)
    cache = model_dir / "code" / "__pycache__"
    cache.mkdir(parents=True)
    (cache / "loader.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (model_dir / "stray.pyc").write_bytes(b"\x00")
    assert model_digest(model_dir) == before
    (model_dir / "code" / "loader.py").write_text("x = 1\n")  # real content still counts
    assert model_digest(model_dir) != before
