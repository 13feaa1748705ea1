"""Azure ML no-code batch specs: built with azure-ai-ml entities, read back by its loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("azure.ai.ml", reason="the azure extra is not installed")

from batch.azure import (
    build_batch_deployment,
    error_threshold_for,
    load_batch_specs,
    write_batch_specs,
)
from lifecycle.base.errors import DeploymentError
from tests.support.batch_models import save_logreg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_logreg(tmp_path_factory.mktemp("m") / "logreg")


def test_specs_round_trip_through_the_sdk_loaders(model_dir: Path, tmp_path: Path) -> None:
    from azure.ai.ml.entities import BatchEndpoint, Model, ModelBatchDeployment

    spec = build_batch_deployment(
        "churn", 3, endpoint="churn-batch", compute="cpu-cluster", model_path=model_dir,
        mini_batch_size=5, instance_count=2, max_concurrency_per_instance=3,
    )  # fmt: skip
    assert isinstance(spec.deployment, ModelBatchDeployment)
    files = write_batch_specs(spec, tmp_path / "specs")
    assert sorted(Path(p).name for p in files.values()) == [
        "deployment.yml",
        "endpoint.yml",
        "model.yml",
    ]
    loaded = load_batch_specs(tmp_path / "specs")
    assert isinstance(loaded.model, Model) and loaded.model.type == "mlflow_model"
    assert (loaded.model.name, loaded.model.version) == ("churn", "3")
    assert (Path(loaded.model.path) / "MLmodel").is_file()
    assert isinstance(loaded.endpoint, BatchEndpoint) and loaded.endpoint.name == "churn-batch"
    dep = loaded.deployment
    assert isinstance(dep, ModelBatchDeployment)
    assert dep.model == "churn:3" and dep.compute == "cpu-cluster"
    assert dep.mini_batch_size == 5 and dep.resources.instance_count == 2
    assert dep.max_concurrency_per_instance == 3
    assert dep.output_action == "append_row" and dep.output_file_name == "predictions.csv"
    assert dep.error_threshold == 0 and dep.retry_settings.max_retries == 3
    assert dep.tags["lifecycle.model_version"] == "3"
    # No environment, no scoring script: Azure's no-code MLflow path.
    raw = yaml.safe_load(Path(files["deployment"]).read_text())
    assert "environment" not in raw and "code_configuration" not in raw
    assert yaml.safe_load(Path(files["model"]).read_text())["path"] == "model"


def test_error_threshold_translation() -> None:
    assert error_threshold_for(0) == 0
    assert error_threshold_for(1) == -1
    assert error_threshold_for(0.3, error_threshold=7) == 7
    with pytest.raises(DeploymentError, match="counts failed files, not a rate"):
        error_threshold_for(0.3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint": "ab"}, "Invalid Azure ML endpoint name 'ab'"),
        ({"deployment_name": "has space"}, "Invalid Azure ML deployment name"),
        ({"compute": ""}, "compute name is empty"),
        ({"mini_batch_size": 0}, "must be 1 or more"),
    ],
)
def test_invalid_settings_are_refused(model_dir: Path, kwargs: dict, message: str) -> None:
    args = {"endpoint": "churn-batch", "compute": "cpu", "model_path": model_dir, **kwargs}
    with pytest.raises(DeploymentError, match=message):
        build_batch_deployment("churn", 1, **args)


def test_not_a_model_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="not an MLflow model directory"):
        build_batch_deployment("churn", 1, endpoint="churn-b", compute="c", model_path=tmp_path)


def test_cli_error_threshold_reaches_the_deployment(
    model_dir: Path, dev: object, project_dir: Path
) -> None:
    from click.testing import CliRunner

    from lifecycle.cli import cli
    from lifecycle.registry.versions import log_and_register

    log_and_register(dev, model_dir, "batchy", experiment="t", trust_pickle=True)  # type: ignore[arg-type]
    base = ["deploy", "azure-batch", "batchy", "--version", "1", "--endpoint", "e-batch"]
    base += ["--compute", "cpu", "-w", "dev"]
    runner = CliRunner()
    done = runner.invoke(cli, [*base, "--error-threshold", "5", "--out", "specs", "--json"])
    assert done.exit_code == 0, done.output
    assert load_batch_specs(project_dir / "specs").deployment.error_threshold == 5
    refused = runner.invoke(cli, [*base, "--max-error-rate", "0.3", "--out", "other"])
    assert refused.exit_code == 1
    assert "--max-error-rate 0.3 cannot be translated" in refused.output
    assert not (project_dir / "other").exists()
