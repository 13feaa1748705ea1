"""Stages mirrored as aliases, capability flags, rollback and the audit history (real stores)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

from lifecycle.base.audit import read_history
from lifecycle.base.errors import InvalidStageError, ModelNotFoundError
from lifecycle.base.refs import resolve_model
from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from lifecycle.registry.stages import (
    STAGE_TAG,
    _unsupported,
    capabilities,
    rollback,
    transition,
    versions_in_stage,
)
from lifecycle.registry.versions import log_and_register


def _versions(ws: Workspace, model_dir: Path, name: str, n: int) -> list[str]:
    return [
        log_and_register(ws, model_dir, name, experiment="t", force=True, trust_pickle=True).version
        for _ in range(n)
    ]


def test_transition_any_case_mirrors_alias_and_archives(dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "m", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # users never see the deprecation
        first = transition(dev, "m", "1", "pRoDuCtIoN")
    assert first["to_stage"] == "Production" and first["from_stage"] == "None"
    client = dev.client()
    assert client.get_model_version("m", "1").current_stage == "Production"
    assert resolve_model(dev, "models:/m/production").version == "1"
    assert resolve_model(dev, "models:/m@production").version == "1"
    second = transition(dev, "m", 2, "production", alias="champion")
    assert second["archived"] == ["1"] and second["alias"] == "champion"
    assert client.get_model_version("m", "1").current_stage == "Archived"
    assert client.get_model_version("m", "1").tags[STAGE_TAG] == "Archived"
    for uri in ("models:/m/Production", "models:/m@production", "models:/m@champion"):
        assert resolve_model(dev, uri).version == "2"
    # Leaving a stage drops its alias.
    transition(dev, "m", "2", "staging")
    assert resolve_model(dev, "models:/m@staging").version == "2"
    assert client.get_registered_model("m").aliases.get("production") is None
    events = read_history(dev, "m")
    assert [(e["action"], e["version"], e["to_stage"]) for e in events] == [
        ("transition", "1", "Production"),
        ("transition", "2", "Production"),
        ("transition", "2", "Staging"),
    ]
    assert events[1]["archived"] == ["1"] and events[1]["by"] == "pytest"


def test_no_archive_keeps_both(dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "keep", 2)
    transition(dev, "keep", "1", "Production")
    result = transition(dev, "keep", "2", "Production", archive_existing=False)
    assert result["archived"] == []
    assert versions_in_stage(dev, "keep", "Production") == ["2", "1"]


def test_workspace_without_stages_uses_aliases(dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "nostage", 2)
    ws = dataclasses.replace(dev, supports_stages=False)
    assert capabilities(ws) == {"stages": False, "aliases": True}
    transition(ws, "nostage", "1", "Production")
    moved = transition(ws, "nostage", "2", "Production")
    assert moved["stage_written"] is False and moved["alias_written"] is True
    assert moved["archived"] == ["1"]
    assert dev.client().get_model_version("nostage", "2").current_stage == "None"
    assert resolve_model(ws, "models:/nostage/Production").version == "2"
    assert rollback(ws, "nostage")["to_version"] == "1"
    assert resolve_model(ws, "models:/nostage/Production").version == "1"


def test_workspace_without_aliases_uses_stages(dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "noalias", 1)
    ws = dataclasses.replace(dev, supports_aliases=False)
    moved = transition(ws, "noalias", "1", "staging")
    assert moved["stage_written"] is True and moved["alias_written"] is False
    assert dev.client().get_registered_model("noalias").aliases == {}
    assert resolve_model(ws, "models:/noalias/Staging").version == "1"


def test_unsupported_api_detection_is_by_error_not_scheme() -> None:
    from mlflow.protos import databricks_pb2 as codes

    assert _unsupported(MlflowException("x", error_code=codes.ENDPOINT_NOT_FOUND))
    assert _unsupported(
        MlflowException("API request to endpoint /x failed with error code 404 != 200")
    )
    assert not _unsupported(
        MlflowException("Model Version (name=m) not found", codes.RESOURCE_DOES_NOT_EXIST)
    )


def test_rollback_restores_previous_and_archives_current(dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "rb", 3)
    transition(dev, "rb", "1", "Production")
    transition(dev, "rb", "2", "Staging")
    transition(dev, "rb", "3", "Production")
    result = rollback(dev, "rb")
    assert (result["from_version"], result["to_version"], result["archived"]) == ("3", "1", ["3"])
    assert resolve_model(dev, "models:/rb/Production").version == "1"
    assert resolve_model(dev, "models:/rb@production").version == "1"
    assert dev.client().get_model_version("rb", "3").current_stage == "Archived"
    last = read_history(dev, "rb")[-1]
    assert last["action"] == "rollback" and last["from_version"] == "3" and last["version"] == "1"
    with pytest.raises(
        ModelNotFoundError, match="No earlier version of model 'rb' held stage 'Staging'"
    ):
        rollback(dev, "rb", "staging")  # v2 is the first Staging holder: nothing before it
    # v2 into Production next: rolling it back goes to v1, skipping v3, which a rollback
    # took out.
    transition(dev, "rb", "2", "Production")
    assert rollback(dev, "rb")["to_version"] == "1"


def test_rollback_without_stage_holder(dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "empty", 1)
    with pytest.raises(ModelNotFoundError, match="no version in stage 'Production'"):
        rollback(dev, "empty")


def test_cli_transition_and_errors(project_dir: Path, dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "cli", 1)
    runner = CliRunner()
    ok = runner.invoke(cli, ["transition", "cli", "1", "STAGING", "--alias", "challenger"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == "cli version 1: None -> Staging alias challenger"
    as_json = runner.invoke(cli, ["transition", "cli", "1", "production", "--json", "-w", "dev"])
    assert json.loads(as_json.stdout)["to_stage"] == "Production"
    bad = runner.invoke(cli, ["transition", "cli", "1", "live"])
    assert bad.exit_code == 1
    assert bad.stderr.strip() == (
        "Error: Invalid stage 'live'. Value must be one of None, Staging, Production, Archived "
        "(any letter case)"
    )
    missing = runner.invoke(cli, ["transition", "nope", "1", "Staging"])
    assert missing.exit_code == 1
    assert "Registered model 'nope' does not exist in workspace 'dev'" in missing.stderr
    no_version = runner.invoke(cli, ["transition", "cli", "7", "Staging"])
    assert no_version.exit_code == 1 and "Existing versions: 1" in no_version.stderr
    with pytest.raises(InvalidStageError):
        transition(dev, "cli", "1", "")


def test_cli_rollback_and_history(project_dir: Path, dev: Workspace, model_dir: Path) -> None:
    _versions(dev, model_dir, "hist", 2)
    runner = CliRunner()
    for v in ("1", "2"):
        assert runner.invoke(cli, ["transition", "hist", v, "Production"]).exit_code == 0
    rb = runner.invoke(cli, ["rollback", "hist", "-w", "dev"])
    assert rb.exit_code == 0, rb.output
    assert rb.stdout.strip() == "hist Production: version 2 -> version 1 (archived 2)"
    hist = runner.invoke(cli, ["history", "hist", "-w", "dev", "--json"])
    events = json.loads(hist.stdout)
    assert [e["action"] for e in events] == ["transition", "transition", "rollback"]
    text = runner.invoke(cli, ["history", "hist"]).stdout.splitlines()
    assert len(text) == 3 and "rollback" in text[2] and "Archived -> Production" in text[2]
    assert "(rolled back from v2)" in text[2] and "?" not in text[2] and "from  v" not in text[2]
    # A second rollback does not put back the version just rolled back.
    again = runner.invoke(cli, ["rollback", "hist", "-w", "dev"])
    assert again.exit_code == 1 and "nothing to roll back to" in again.stderr
    assert resolve_model(dev, "models:/hist/Production").version == "1"
    unknown = runner.invoke(cli, ["history", "ghost"])
    assert unknown.exit_code == 1 and "'ghost' does not exist" in unknown.stderr
