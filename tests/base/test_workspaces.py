"""Workspace configuration and reachability, against real stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lifecycle.base.errors import ConfigError, WorkspaceError
from lifecycle.base.workspaces import check_reachable, load_config, local_workspace, use_workspace
from tests.support.mlflow_server import MlflowServer


def test_embedded_default_has_dev_and_prod_under_cwd(project_dir: Path) -> None:
    config = load_config()
    assert set(config.workspaces) == {"dev", "prod"}
    assert config.default == "dev"
    dev = config.get("dev")
    assert dev.tracking_uri == f"sqlite:///{project_dir / '.lifecycle' / 'dev' / 'mlflow.db'}"
    assert dev.registry_uri == dev.tracking_uri
    assert dev.artifact_location == (project_dir / ".lifecycle/dev/artifacts").as_uri()
    assert config.get("prod").tracking_uri != dev.tracking_uri


def test_unknown_workspace_lists_known_ones(project_dir: Path) -> None:
    with pytest.raises(
        WorkspaceError, match=r"Unknown workspace 'nope'\. Known workspaces: dev, prod"
    ):
        load_config().get("nope")


def test_config_file_adds_and_redefines(project_dir: Path) -> None:
    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump(
            {
                "default": "staging",
                "workspaces": {
                    "staging": {"tracking_uri": "sqlite:///stores/staging.db"},
                    "remote": {"tracking_uri": "http://127.0.0.1:1", "supports_aliases": False},
                },
            }
        )
    )
    config = load_config()
    assert config.default == "staging"
    assert config.get("staging").tracking_uri == f"sqlite:///{project_dir / 'stores/staging.db'}"
    remote = config.get("remote")
    assert remote.registry_uri == "http://127.0.0.1:1"
    assert remote.supports_aliases is False
    assert remote.supports_stages is None  # detected at use, not guessed from the scheme
    ok, reason = check_reachable(remote, timeout=1)
    assert not ok and "ConnectionError" in reason


def test_config_named_by_env(
    tmp_path: Path, project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "elsewhere.yaml"
    cfg.write_text(yaml.safe_dump({"workspaces": {"qa": {}}}))
    monkeypatch.setenv("LIFECYCLE_CONFIG", str(cfg))
    assert "qa" in load_config().workspaces


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("workspaces: [1, 2]", "must be a mapping of name to settings"),
        ("workspaces:\n  dev: {trackinguri: x}", "unknown setting\\(s\\) trackinguri"),
        ("default: qa", "Default workspace 'qa'"),
        ("workspaces: {a: {tracking_uri: x, supports_stages: maybe}}", "must be true or false"),
        (": : :", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_error(project_dir: Path, content: str, message: str) -> None:
    (project_dir / "lifecycle.yaml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config()


def test_missing_explicit_config(project_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("missing.yaml")


def test_use_workspace_sets_and_restores_mlflow_uris(project_dir: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri("sqlite:///before.db")
    dev = load_config().get("dev")
    with use_workspace(dev):
        assert mlflow.get_tracking_uri() == dev.tracking_uri
        assert mlflow.get_registry_uri() == dev.registry_uri
    assert mlflow.get_tracking_uri() == "sqlite:///before.db"


def test_remote_server_is_reachable(mlflow_server: MlflowServer) -> None:
    from lifecycle.base.workspaces import Workspace

    ws = Workspace("remote", mlflow_server.url, mlflow_server.url)
    assert check_reachable(ws) == (True, "ok")


def test_foreign_mlflow_run_id_is_hidden_inside_a_workspace(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `mlflow run`, MLFLOW_RUN_ID belongs to the launcher's store, not the workspace's."""
    import os

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///launcher.db")
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123456789abcdef0123456789abcdef")
    from lifecycle.base.workspaces import get_or_create_experiment

    dev = load_config().get("dev")
    exp_id = get_or_create_experiment(dev, "t")
    with use_workspace(dev), mlflow.start_run(experiment_id=exp_id) as run:  # no foreign resume
        assert run.info.run_id != "0123456789abcdef0123456789abcdef"
    assert os.environ["MLFLOW_RUN_ID"] == "0123456789abcdef0123456789abcdef"


def test_use_workspace_does_not_leak_the_experiment_id_to_child_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; after the block it is gone, so an
    `mlflow run` started later does not look for that id in its own store."""
    import mlflow

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    ws = local_workspace("leak", tmp_path / "ws")
    with use_workspace(ws):
        mlflow.set_experiment("leaky")
        assert os.environ.get("MLFLOW_EXPERIMENT_ID")
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ
