"""``lifecycle deploy azure-online … --package --image``: the packaged image as an Azure ML
model package, every spec read back with azure-ai-ml's own loaders.

Nothing reaches Azure: the rollout's calls go to a recording stand-in for ``MLClient`` (the
one edge the tests may fake), after the specs were loaded by the SDK.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lifecycle.base.deployments import list_deployments
from lifecycle.base.errors import DeploymentError
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.versions import log_and_register
from serving.azure import apply_online, deploy_online, load_online_specs
from serving.azure_package import load_package_spec
from tests.support.serving_models import save_logreg

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.azure

IMAGE = "myregistry.azurecr.io/churn:1"


@pytest.fixture
def registered(dev: Workspace, tmp_path: Path) -> Workspace:
    log_and_register(dev, save_logreg(tmp_path / "m"), "churn", experiment="t", trust_pickle=True)
    return dev


def test_the_package_specs_load_with_the_sdk_and_the_deployment_runs_the_package(
    registered: Workspace, tmp_path: Path
) -> None:
    out = tmp_path / "specs"
    result = deploy_online(
        registered, "churn", "1", endpoint="churn-rt", deployment="green", out_dir=out,
        package_image=IMAGE,
    )  # fmt: skip
    assert set(result["files"]) >= {"model", "endpoint", "deployment", "environment", "package"}
    spec = load_online_specs(out)
    env = spec.environment
    assert (env.name, str(env.version), env.image) == ("churn-lifecycle-image", "1", IMAGE)
    routes = {k: (v["port"], v["path"]) for k, v in env.inference_config.items()}
    assert routes == {
        "livenessRoute": (8080, "/health"),
        "readinessRoute": (8080, "/health"),
        "scoringRoute": (8080, "/invocations"),
    }
    pkg = spec.package
    assert type(pkg).__name__ == "ModelPackage"
    assert type(pkg.inferencing_server).__name__ == "CustomInferencingServer"
    conf = pkg.inferencing_server.inference_configuration
    assert (conf.scoring_route.path, str(conf.scoring_route.port)) == ("/invocations", "8080")
    assert (conf.readiness_route.path, conf.liveness_route.path) == ("/health", "/health")
    assert pkg.base_environment_source.resource_id == "azureml:churn-lifecycle-image:1"
    assert pkg.target_environment_id == "churn-lifecycle-pkg"
    assert pkg.model_configuration.mode == "download"
    assert pkg.environment_variables == {
        "LIFECYCLE_SERVE_MODEL_NAME": "churn",
        "LIFECYCLE_SERVE_MODEL_VERSION": "1",
    }
    # What the SDK sends to Azure for this package (its REST mapping of the loaded entity).
    rest = pkg._to_rest_object()
    assert rest["inferencingServer"]["serverType"] == "Custom"
    assert rest["baseEnvironmentSource"]["baseEnvironmentSourceType"] == "EnvironmentAsset"
    dep = spec.deployment
    assert dep.model is None and dep.code_configuration is None
    assert str(dep.environment).removeprefix("azureml:") == "churn-lifecycle-pkg@latest"
    actions = [p["action"] for p in result["plan"]]
    assert actions == [
        "register_model",
        "create_or_update_environment",
        "package_model",
        "create_or_update_endpoint",
        "create_or_update_deployment",
        "smoke_invoke",
        "set_traffic",
    ]
    [record] = list_deployments(registered, "churn", "1")
    assert (record["kind"], record["image"]) == ("azure-online", IMAGE)


def test_the_sdks_own_loader_fails_on_custom_routes_as_shipped(
    registered: Workspace, tmp_path: Path
) -> None:
    """Why load_package_spec carries a fix: azure-ai-ml's RouteSchema bug, seen in a fresh
    process. When the SDK fixes it this test fails, and the fix can go."""
    out = tmp_path / "specs"
    deploy_online(registered, "churn", "1", endpoint="churn-rt", out_dir=out, package_image=IMAGE)
    code = "import sys; from azure.ai.ml import load_model_package; load_model_package(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out / "package.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "`Nested` fields must be passed a `Schema`" in proc.stderr


@pytest.mark.parametrize(
    ("edit", "bad"),
    [
        (
            lambda d: d["inferencing_server"].update(type="nonsense"),
            "inferencing_server.type: Value 'nonsense' passed is not in set",
        ),
        (lambda d: d.pop("target_environment"), "target_environment"),
    ],
)
def test_a_package_spec_the_sdk_refuses_is_one_line(
    registered: Workspace, tmp_path: Path, edit: Any, bad: str
) -> None:
    out = tmp_path / "specs"
    deploy_online(registered, "churn", "1", endpoint="churn-rt", out_dir=out, package_image=IMAGE)
    data = yaml.safe_load((out / "package.yml").read_text())
    edit(data)
    (out / "package.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeploymentError) as err:
        load_package_spec(out / "package.yml")
    message = str(err.value)
    assert "\n" not in message and "package.yml" in message and bad in message, message


class _Poller:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        return self.value


class _Ops:
    def __init__(self, kind: str, calls: list[tuple[str, Any]]) -> None:
        self.kind, self.calls = kind, calls

    def create_or_update(self, entity: Any) -> Any:
        self.calls.append((f"{self.kind}.create_or_update", entity))
        return entity

    def begin_create_or_update(self, entity: Any) -> _Poller:
        self.calls.append((f"{self.kind}.begin_create_or_update", entity))
        return _Poller(entity)

    def package(self, name: str, version: str, package: Any) -> Any:
        self.calls.append(("models.package", (name, version, package.target_environment_id)))
        return type("Env", (), {"name": package.target_environment_id, "version": "4"})()

    def invoke(self, **kwargs: Any) -> str:
        self.calls.append(("online_endpoints.invoke", kwargs["deployment_name"]))
        return '[{"label": 1}]'

    def get(self, name: str) -> Any:
        return type("Endpoint", (), {"name": name, "traffic": {}})()


class _RecordingClient:
    """Stands in for ``MLClient``: records each call the rollout makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        for kind in ("models", "environments", "online_endpoints", "online_deployments"):
            setattr(self, kind, _Ops(kind, self.calls))


def test_apply_packages_the_model_then_deploys_the_packages_environment(
    registered: Workspace, tmp_path: Path
) -> None:
    out = tmp_path / "specs"
    deploy_online(registered, "churn", "1", endpoint="churn-rt", out_dir=out, package_image=IMAGE)
    spec = load_online_specs(out)
    client = _RecordingClient()
    done = apply_online(spec, out, client)
    names = [c[0] for c in client.calls]
    assert names == [
        "models.create_or_update",
        "environments.create_or_update",
        "models.package",
        "online_endpoints.begin_create_or_update",
        "online_deployments.begin_create_or_update",
        "online_endpoints.invoke",
        "online_endpoints.begin_create_or_update",
    ]
    assert client.calls[1][1].image == IMAGE
    assert client.calls[2][1] == ("churn", "1", "churn-lifecycle-pkg")
    # The deployment names the environment the package call returned, pinned by version.
    assert client.calls[4][1].environment == "azureml:churn-lifecycle-pkg:4"
    assert "packaged as environment churn-lifecycle-pkg:4" in done


@pytest.mark.parametrize(
    ("args", "code", "bad"),
    [
        (["--package"], 2, "--package needs --image"),
        (["--image", IMAGE], 2, f"--image '{IMAGE}' is for --package"),
        (["--package", "--image", "my registry/churn:1"], 1, "Invalid image 'my registry/churn:1'"),
    ],
)
def test_cli_package_options_are_checked_before_anything_is_written(
    registered: Workspace, tmp_path: Path, args: list[str], code: int, bad: str
) -> None:
    from lifecycle.cli import cli

    out = tmp_path / "cli-specs"
    result = CliRunner().invoke(
        cli,
        ["deploy", "azure-online", "churn", "--version", "1", "--endpoint", "churn-rt",
         "--out", str(out), "-w", "dev", *args],
    )  # fmt: skip
    assert result.exit_code == code, result.output
    errors = [ln for ln in result.output.splitlines() if "Error" in ln]
    assert len(errors) == 1 and bad in errors[0], result.output
    assert not out.exists()


def test_cli_writes_the_package_specs(registered: Workspace, tmp_path: Path) -> None:
    from lifecycle.cli import cli

    out = tmp_path / "cli-specs"
    result = CliRunner().invoke(
        cli,
        ["deploy", "azure-online", "churn", "--version", "1", "--endpoint", "churn-rt",
         "--out", str(out), "--package", "--image", IMAGE, "--json", "-w", "dev"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["image"] == IMAGE
    assert Path(data["files"]["package"]).name == "package.yml"
    assert load_package_spec(data["files"]["package"]).target_environment_id == (
        "churn-lifecycle-pkg"
    )
