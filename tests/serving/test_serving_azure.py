"""Azure ML no-code online deployment specs, read back with azure-ai-ml's own loaders.

Nothing here reaches Azure: the specs are built from a real registered model, dumped as
YAML and loaded with ``load_model`` / ``load_online_endpoint`` / ``load_online_deployment``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifecycle.base.errors import DeploymentError
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.versions import log_and_register
from serving.azure import deploy_online, load_online_specs, parse_traffic
from tests.support.serving_models import FEATURES, save_logreg

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.azure


@pytest.fixture
def registered(dev: Workspace, tmp_path: Path) -> Workspace:
    log_and_register(
        dev, save_logreg(tmp_path / "m"), "churn", experiment="azure-tests", trust_pickle=True
    )
    return dev


def test_specs_round_trip_through_the_sdk_loaders(registered: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "specs"
    result = deploy_online(
        registered,
        "churn",
        "1",
        endpoint="churn-rt",
        deployment="green",
        instance_type="Standard_F2s_v2",
        instance_count=2,
        traffic="blue=90,green=10;green=100",
        out_dir=out,
    )
    assert result["applied"] is False
    spec = load_online_specs(out)
    assert spec.model.type == "mlflow_model"
    assert (spec.model.name, str(spec.model.version)) == ("churn", "1")
    assert spec.endpoint.name == "churn-rt" and spec.endpoint.auth_mode == "key"
    dep = spec.deployment
    assert (dep.name, dep.endpoint_name) == ("green", "churn-rt")
    assert str(dep.model).removeprefix("azureml:") == "churn:1"
    assert dep.environment is None and dep.code_configuration is None  # no-code MLflow
    assert (dep.instance_type, dep.instance_count) == ("Standard_F2s_v2", 2)
    assert (out / "model" / "MLmodel").is_file()
    assert spec.traffic_steps == [{"blue": 90, "green": 10}, {"green": 100}]
    actions = [p["action"] for p in result["plan"]]
    assert actions == [
        "register_model",
        "create_or_update_endpoint",
        "create_or_update_deployment",
        "smoke_invoke",
        "set_traffic",
        "set_traffic",
    ]
    assert result["plan"][2]["traffic"] == {"green": 0}  # the new version starts idle
    request = json.loads((out / "sample-request.json").read_text())
    assert request["input_data"]["columns"] == FEATURES
    assert len(request["input_data"]["data"]) == len(request["input_data"]["index"]) == 2
    assert not list(out.glob(".*.tmp"))


def test_default_traffic_moves_everything_to_the_new_deployment() -> None:
    assert parse_traffic(None, "blue") == [{"blue": 100}]


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ("blue=90,green=5", "adds up to 95%"),
        ("blue=90,green", "expected NAME=PERCENT"),
        ("blue=100", "never sends requests to deployment 'green'"),
        ("blue=150,green=-50", "percent must be 0..100"),
        ("green=-5,blue=105", "expected NAME=PERCENT"),
        ("b=50,green=50", "Invalid Azure ML deployment name 'b'"),
    ],
)
def test_bad_traffic_is_refused_with_a_clear_message(traffic: str, message: str) -> None:
    with pytest.raises(DeploymentError, match=message):
        parse_traffic(traffic, "green")


def test_bad_names_and_missing_versions_write_nothing(
    registered: Workspace, tmp_path: Path
) -> None:
    from lifecycle.base.errors import ModelNotFoundError

    with pytest.raises(DeploymentError, match="endpoint name 'x'"):
        deploy_online(registered, "churn", "1", endpoint="x", out_dir=tmp_path / "a")
    with pytest.raises(ModelNotFoundError, match="Existing versions: 1"):
        deploy_online(registered, "churn", "7", endpoint="churn-rt", out_dir=tmp_path / "b")
    assert not (tmp_path / "a" / "deployment.yml").exists()
    assert not (tmp_path / "b").exists()


def test_apply_without_azure_coordinates_fails_before_writing(
    registered: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(DeploymentError, match="AZURE_SUBSCRIPTION_ID"):
        deploy_online(
            registered, "churn", "1", endpoint="churn-rt", out_dir=tmp_path / "c", apply=True
        )
    assert not (tmp_path / "c").exists()


def test_cli_writes_the_specs(registered: Workspace, tmp_path: Path) -> None:
    from lifecycle.cli import cli

    out = tmp_path / "cli-specs"
    result = CliRunner().invoke(
        cli,
        [
            "deploy",
            "azure-online",
            "churn",
            "--version",
            "1",
            "--endpoint",
            "churn-rt",
            "--out",
            str(out),
            "--json",
            "-w",
            "dev",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["deployment"] == "blue" and Path(data["files"]["deployment"]).is_file()
    bad = CliRunner().invoke(
        cli,
        [
            "deploy",
            "azure-online",
            "churn",
            "--version",
            "1",
            "--endpoint",
            "churn-rt",
            "--traffic",
            "blue=50",
            "--out",
            str(out),
            "-w",
            "dev",
        ],
    )
    assert bad.exit_code == 1
    assert "adds up to 50%" in bad.output
