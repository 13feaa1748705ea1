"""Model URI parsing and resolution in real workspaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lifecycle.base.errors import InvalidArgumentError, InvalidStageError, ModelNotFoundError
from lifecycle.base.refs import ModelRef, canonical_stage, parse_model_uri, resolve_model
from lifecycle.base.workspaces import Workspace, quiet_mlflow_warnings
from lifecycle.registry.versions import log_and_register
from tests.support.mlflow_models import save_sklearn_model


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/m/3", ModelRef(name="m", version="3")),
        ("models:/m/latest", ModelRef(name="m", latest=True)),
        ("models:/m/production", ModelRef(name="m", stage="Production")),
        ("models:/m/STAGING", ModelRef(name="m", stage="Staging")),
        ("models:/m@champion", ModelRef(name="m", alias="champion")),
        ("models:/team/m/2", ModelRef(name="team/m", version="2")),
    ],
)
def test_parse(uri: str, ref: ModelRef) -> None:
    assert parse_model_uri(uri) == ref


@pytest.mark.parametrize("stage", ["none", "Staging", "PRODUCTION", "archived"])
def test_canonical_stage_any_case(stage: str) -> None:
    assert canonical_stage(stage) == stage.capitalize()


def test_unknown_stage_lists_allowed() -> None:
    with pytest.raises(
        InvalidStageError, match="Value must be one of None, Staging, Production, Archived"
    ):
        canonical_stage("prod")
    with pytest.raises(InvalidStageError, match="'Prod' is not a version number"):
        parse_model_uri("models:/m/Prod")


@pytest.mark.parametrize(
    "uri", ["runs:/abc/model", "models:/", "models:/m-0123", "models:/justname"]
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_model_uri(uri)


@pytest.fixture
def two_versions(
    dev: Workspace, tmp_path: Path, fitted_logreg: Any, breast_cancer: Any
) -> Workspace:
    X, _ = breast_cancer
    model_dir = save_sklearn_model(fitted_logreg, tmp_path / "m", X.head(5))
    log_and_register(dev, model_dir, "m", experiment="t", trust_pickle=True)
    log_and_register(dev, model_dir, "m", experiment="t", force=True, trust_pickle=True)
    client = dev.client()
    with quiet_mlflow_warnings():
        client.transition_model_version_stage("m", "1", "Production")
    client.set_registered_model_alias("m", "champion", "1")
    return dev


def test_resolve_every_form(two_versions: Workspace) -> None:
    ws = two_versions
    assert resolve_model(ws, "models:/m/2").version == "2"
    assert resolve_model(ws, "models:/m/latest").version == "2"
    assert resolve_model(ws, "models:/m/production").version == "1"
    assert resolve_model(ws, "models:/m@champion").version == "1"
    resolved = resolve_model(ws, "models:/m/Production")
    assert resolved.pinned_uri == "models:/m/1" and resolved.stage == "Production"


def test_stage_falls_back_to_mirrored_alias(two_versions: Workspace) -> None:
    ws = two_versions
    ws.client().set_registered_model_alias("m", "staging", "2")
    assert resolve_model(ws, "models:/m/Staging").version == "2"


def test_resolve_errors_name_what_exists(two_versions: Workspace) -> None:
    ws = two_versions
    with pytest.raises(
        ModelNotFoundError, match=r"Version '9' of model 'm' .* Existing versions: 1, 2"
    ):
        resolve_model(ws, "models:/m/9")
    with pytest.raises(
        ModelNotFoundError, match="Registered model 'zz' does not exist in workspace 'dev'"
    ):
        resolve_model(ws, "models:/zz/1")
    with pytest.raises(ModelNotFoundError, match="no version in stage 'Archived'"):
        resolve_model(ws, "models:/m/archived")
    with pytest.raises(ModelNotFoundError, match="Existing aliases: champion"):
        resolve_model(ws, "models:/m@nope")


def test_local_model_dir(
    tmp_path: Path, dev: Workspace, fitted_logreg: Any, breast_cancer: Any
) -> None:
    X, _ = breast_cancer
    model_dir = save_sklearn_model(fitted_logreg, tmp_path / "local", X.head(5))
    resolved = resolve_model(dev, str(model_dir))
    assert resolved.pinned_uri == str(model_dir.resolve())
    assert isinstance(X, pd.DataFrame)
