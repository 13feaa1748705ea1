"""Azure ML no-code MLflow online deployments, with a blue/green rollout plan.

Owns the spec builder: a model registration (``AssetTypes.MLFLOW_MODEL``), a
``ManagedOnlineEndpoint(auth_mode="key")`` and a ``ManagedOnlineDeployment`` with no
environment and no scoring script (Azure serves MLflow models itself), built with
azure-ai-ml's own entities and dumped as YAML that its loaders (``load_model``,
``load_online_endpoint``, ``load_online_deployment``) read back. Beside them:
``sample-request.json`` (the model's input example wrapped as Azure's ``input_data``, which
``lifecycle serve`` answers too) and ``plan.json`` (the rollout). With a packaged image
(``--package --image``), ``environment.yml`` and ``package.yml`` too, and the deployment
runs the package's environment instead (:mod:`serving.azure_package`).

Blue/green: the version goes to its own deployment, which starts at 0% traffic, is
smoke-invoked with the sample request, then traffic moves through the ``--traffic`` steps
(default: all of it to the new deployment). ``apply`` is a thin layer over
:mod:`lifecycle.base.azureml`, the only module that reaches Azure.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.azureml import entity_yaml_data, stage_model_files, write_text_atomic
from lifecycle.base.errors import DeploymentError
from lifecycle.base.fetch import fetch_model
from lifecycle.base.tags import MODEL_NAME_TAG, MODEL_VERSION_TAG, SOURCE_WORKSPACE_NAME_TAG
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{2,31}$")


@dataclass
class OnlineDeploymentSpec:
    """The azure-ai-ml entities of a no-code online deployment and its rollout plan."""

    model: Any
    endpoint: Any
    deployment: Any
    sample_request: dict[str, Any] | None = None
    traffic_steps: list[dict[str, int]] = field(default_factory=list)
    #: With ``--package``: the image's Environment and the ModelPackage built on it
    #: (:mod:`serving.azure_package`); the deployment then runs the package, not Azure's
    #: no-code MLflow server.
    environment: Any = None
    package: Any = None


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value):
        raise DeploymentError(
            f"Invalid Azure ML {kind} name '{value}': expected 3-32 letters, digits or '-', "
            "starting with a letter"
        )


def parse_traffic(traffic: str | None, deployment: str) -> list[dict[str, int]]:
    """The traffic steps of ``--traffic`` (``'blue=90,green=10;green=100'``).

    Each step maps deployment names to percentages that add up to 100. Without
    ``traffic``: one step sending everything to ``deployment``.

    Raises:
        DeploymentError: a malformed step, a percentage outside 0..100, a step that does not
            add up to 100, or a plan that never routes traffic to ``deployment``.
    """
    if not traffic or not traffic.strip():
        return [{deployment: 100}]
    steps: list[dict[str, int]] = []
    for raw_step in traffic.split(";"):
        step: dict[str, int] = {}
        for part in raw_step.split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or not name or not value.strip().isdigit():
                raise DeploymentError(
                    f"Invalid traffic '{part.strip()}' in '{traffic}': expected NAME=PERCENT, "
                    "e.g. blue=90,green=10"
                )
            _check_name("deployment", name)
            pct = int(value)
            if pct > 100:
                raise DeploymentError(f"Invalid traffic '{part.strip()}': percent must be 0..100")
            step[name] = pct
        if sum(step.values()) != 100:
            raise DeploymentError(
                f"Traffic step '{raw_step.strip()}' adds up to {sum(step.values())}%, not 100%"
            )
        steps.append(step)
    if not any(step.get(deployment, 0) > 0 for step in steps):
        raise DeploymentError(
            f"Traffic '{traffic}' never sends requests to deployment '{deployment}' "
            "(the one this version goes to)"
        )
    return steps


def sample_request(model_dir: str | Path) -> dict[str, Any] | None:
    """The model's input example as Azure's ``{"input_data": {columns, index, data}}``."""
    from mlflow.models import Model

    try:
        example = Model.load(str(model_dir)).load_input_example(str(model_dir))
    except Exception as exc:  # no or unreadable example: the smoke test is skipped
        logger.info("no usable input example in %s: %s", model_dir, exc)
        return None
    import pandas as pd

    if isinstance(example, pd.DataFrame):
        split = json.loads(example.to_json(orient="split", index=True))
        return {"input_data": {k: split[k] for k in ("columns", "index", "data")}}
    if isinstance(example, dict):
        return {"input_data": {k: list(v) for k, v in example.items()}}
    try:
        import numpy as np

        return {"input_data": np.asarray(example).tolist()}
    except Exception:
        return None


def build_online_deployment(
    model_name: str,
    version: str | int,
    *,
    endpoint: str,
    model_path: str | Path,
    deployment_name: str = "blue",
    instance_type: str = "Standard_DS3_v2",
    instance_count: int = 1,
    traffic: str | None = None,
    tags: dict[str, str] | None = None,
    package_image: str | None = None,
) -> OnlineDeploymentSpec:
    """Build the model registration, online endpoint and no-code deployment entities (with
    ``package_image``: the package of that image, and a deployment that runs it).

    Args:
        model_name, version: the registered model (also the Azure ML model name/version).
        endpoint: managed online endpoint name (key auth).
        model_path: local MLflow model directory to register.
        deployment_name: the deployment this version goes to (blue/green: the idle one).
        traffic: rollout steps, see :func:`parse_traffic`.

    Raises:
        DeploymentError: a name or setting Azure would refuse.
    """
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, Model

    _check_name("endpoint", endpoint)
    _check_name("deployment", deployment_name)
    if instance_count < 1:
        raise DeploymentError(f"Invalid instance count {instance_count}: expected 1 or more")
    if not instance_type:
        raise DeploymentError("Azure ML instance type is empty: pass --instance-type")
    if not (Path(model_path) / "MLmodel").is_file():
        raise DeploymentError(f"'{model_path}' is not an MLflow model directory (no MLmodel file)")
    steps = parse_traffic(traffic, deployment_name)
    all_tags = {MODEL_NAME_TAG: model_name, MODEL_VERSION_TAG: str(version)}
    all_tags.update(tags or {})
    model = Model(
        name=model_name,
        version=str(version),
        path=str(model_path),
        type=AssetTypes.MLFLOW_MODEL,
        description=f"{model_name} version {version}, registered by lifecycle",
        tags=all_tags,
    )
    ep = ManagedOnlineEndpoint(
        name=endpoint,
        auth_mode="key",
        description=f"Real-time scoring for {model_name}",
        tags=dict(all_tags),
    )
    environment = package = None
    # Without a package Azure serves the registered MLflow model itself (no environment, no
    # code); with one, the package's environment holds the model and the server.
    source: dict[str, Any] = {"model": f"azureml:{model_name}:{version}"}
    what = "No-code MLflow online deployment"
    if package_image is not None:
        from serving.azure_package import image_environment, model_package

        environment = image_environment(model_name, version, package_image)
        package = model_package(model_name, version, environment)
        source = {"environment": f"azureml:{package.target_environment_id}@latest"}
        what = f"Packaged online deployment ({package_image})"
    deployment = ManagedOnlineDeployment(
        name=deployment_name,
        endpoint_name=endpoint,
        instance_type=instance_type,
        instance_count=instance_count,
        description=f"{what} of {model_name} v{version}",
        tags=dict(all_tags),
        **source,
    )
    return OnlineDeploymentSpec(
        model=model,
        endpoint=ep,
        deployment=deployment,
        sample_request=sample_request(model_path),
        traffic_steps=steps,
        environment=environment,
        package=package,
    )


def write_online_specs(spec: OnlineDeploymentSpec, out_dir: str | Path) -> dict[str, str]:
    """Dump ``spec`` as ``model.yml``, ``endpoint.yml``, ``deployment.yml``, ``plan.json`` and
    ``sample-request.json`` in ``out_dir`` (each written to a temp name, then renamed).

    The model files are copied to ``out_dir/model`` so ``model.yml`` is self-contained.

    Returns:
        kind -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage_model_files(spec.model, out)
    files: dict[str, str] = {}
    for kind, entity in (
        ("model", spec.model),
        ("endpoint", spec.endpoint),
        ("deployment", spec.deployment),
    ):
        data = entity_yaml_data(entity, kind=kind)
        files[kind] = write_text_atomic(out / f"{kind}.yml", yaml.safe_dump(data, sort_keys=False))
    if spec.package is not None:
        from serving.azure_package import package_yaml_data

        data = entity_yaml_data(spec.environment, kind="environment")
        files["environment"] = write_text_atomic(
            out / "environment.yml", yaml.safe_dump(data, sort_keys=False)
        )
        files["package"] = write_text_atomic(
            out / "package.yml", yaml.safe_dump(package_yaml_data(spec.package), sort_keys=False)
        )
    plan = rollout_plan(spec)
    files["plan"] = write_text_atomic(out / "plan.json", json.dumps(plan, indent=2))
    if spec.sample_request is not None:
        files["sample_request"] = write_text_atomic(
            out / "sample-request.json", json.dumps(spec.sample_request)
        )
    return files


def rollout_plan(spec: OnlineDeploymentSpec) -> list[dict[str, Any]]:
    """The ordered actions ``--apply`` performs (also written as ``plan.json``)."""
    name = spec.deployment.name
    endpoint = spec.endpoint.name
    plan: list[dict[str, Any]] = [
        {"action": "register_model", "model": f"{spec.model.name}:{spec.model.version}"},
    ]
    if spec.package is not None:
        env = spec.environment
        plan += [
            {
                "action": "create_or_update_environment",
                "environment": f"{env.name}:{env.version}",
                "image": env.image,
            },
            {
                "action": "package_model",
                "model": f"{spec.model.name}:{spec.model.version}",
                "target_environment": spec.package.target_environment_id,
                "spec": "package.yml",
            },
        ]
    plan += [
        {"action": "create_or_update_endpoint", "endpoint": endpoint, "auth_mode": "key"},
        {
            "action": "create_or_update_deployment",
            "endpoint": endpoint,
            "deployment": name,
            "traffic": {name: 0},
        },
    ]
    if spec.sample_request is not None:
        plan.append(
            {
                "action": "smoke_invoke",
                "endpoint": endpoint,
                "deployment": name,
                "request": "sample-request.json",
            }
        )
    plan += [
        {"action": "set_traffic", "endpoint": endpoint, "traffic": step}
        for step in spec.traffic_steps
    ]
    return plan


def load_online_specs(out_dir: str | Path) -> OnlineDeploymentSpec:
    """Read the specs back with azure-ai-ml's own loaders (checks what Azure would accept).

    Raises:
        DeploymentError: the SDK rejects a file.
    """
    from azure.ai.ml import (
        load_environment,
        load_model,
        load_online_deployment,
        load_online_endpoint,
    )

    from serving.azure_package import load_package_spec, sdk_error_line

    out = Path(out_dir)

    def load(loader: Any, name: str) -> Any:
        try:
            return loader(source=str(out / name))
        except Exception as exc:  # the SDK raises its own validation error types
            raise DeploymentError(sdk_error_line(out / name, exc)) from exc

    model = load(load_model, "model.yml")
    endpoint = load(load_online_endpoint, "endpoint.yml")
    deployment = load(load_online_deployment, "deployment.yml")
    environment = package = None
    if (out / "package.yml").is_file():
        environment = load(load_environment, "environment.yml")
        package = load_package_spec(out / "package.yml")
    request_path = out / "sample-request.json"
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    return OnlineDeploymentSpec(
        model=model,
        endpoint=endpoint,
        deployment=deployment,
        sample_request=json.loads(request_path.read_text()) if request_path.is_file() else None,
        traffic_steps=[p["traffic"] for p in plan if p["action"] == "set_traffic"],
        environment=environment,
        package=package,
    )


def apply_online(spec: OnlineDeploymentSpec, out_dir: str | Path, client: Any) -> list[str]:
    """Carry out the rollout plan with an ``MLClient`` (through :mod:`lifecycle.base.azureml`).

    Returns:
        What was done, one line per step.

    Raises:
        DeploymentError: the smoke invocation failed (traffic was not moved).
    """
    from lifecycle.base import azureml

    done = []
    azureml.begin_create_or_update(client, spec.model)
    done.append(f"registered model {spec.model.name}:{spec.model.version}")
    if spec.package is not None:
        azureml.begin_create_or_update(client, spec.environment)
        done.append(f"environment {spec.environment.name}:{spec.environment.version} on the image")
        env = azureml.package_model(client, spec.model.name, spec.model.version, spec.package)
        spec.deployment.environment = f"azureml:{env.name}:{env.version}"
        done.append(f"packaged as environment {env.name}:{env.version}")
    azureml.begin_create_or_update(client, spec.endpoint)
    done.append(f"endpoint {spec.endpoint.name} ready")
    azureml.begin_create_or_update(client, spec.deployment)
    done.append(f"deployment {spec.deployment.name} created at 0% traffic")
    request = Path(out_dir) / "sample-request.json"
    if request.is_file():
        answer = azureml.invoke_online(
            client, spec.endpoint.name, spec.deployment.name, str(request)
        )
        done.append(f"smoke test answered: {answer[:200]}")
    for step in spec.traffic_steps:
        azureml.set_online_traffic(client, spec.endpoint.name, step)
        done.append(f"traffic {step}")
    return done


def deploy_online(
    ws: Workspace,
    model_name: str,
    version: str | int,
    *,
    endpoint: str,
    deployment: str = "blue",
    instance_type: str = "Standard_DS3_v2",
    instance_count: int = 1,
    traffic: str | None = None,
    out_dir: str | Path = "azure-online",
    apply: bool = False,
    package_image: str | None = None,
) -> dict[str, Any]:
    """Write (and with ``apply``, create) the online deployment of ``model_name`` v``version``
    (with ``package_image``: a model package on the image ``lifecycle package`` built).

    The model files come from ``ws``'s registry; the YAML is checked with the SDK's loaders
    before anything is applied; an applied rollout is recorded on the model version.

    Returns:
        ``{"files", "model", "endpoint", "deployment", "plan", "applied", "steps"}``.

    Raises:
        ModelNotFoundError: the version does not exist in ``ws``.
        DeploymentError: a setting Azure would refuse, the SDK rejects the specs, or Azure
            coordinates are missing for ``apply``.
    """

    from lifecycle.base.refs import get_model_version

    get_model_version(ws, model_name, version)
    if apply:
        from lifecycle.base import azureml

        target = azureml.azure_target(ws.extra.get("azure"))  # fail before writing anything
    with tempfile.TemporaryDirectory(prefix="lifecycle-azure-online-") as tmp:
        local = fetch_model(
            ws, f"models:/{model_name}/{version}", tmp, error=DeploymentError,
            restricted_action="deploy",
        ).path  # fmt: skip
        spec = build_online_deployment(
            model_name,
            version,
            endpoint=endpoint,
            model_path=local,
            deployment_name=deployment,
            instance_type=instance_type,
            instance_count=instance_count,
            traffic=traffic,
            tags={SOURCE_WORKSPACE_NAME_TAG: ws.name},
            package_image=package_image,
        )
        files = write_online_specs(spec, out_dir)
    checked = load_online_specs(out_dir)
    result: dict[str, Any] = {
        "files": files,
        "model": f"{model_name}:{version}",
        "endpoint": endpoint,
        "deployment": checked.deployment.name,
        "plan": rollout_plan(spec),
        "applied": False,
    }
    from lifecycle.base.deployments import record_deployment

    details: dict[str, Any] = {"applied": False, "specs": str(Path(out_dir).resolve())}
    if package_image:
        result["image"] = details["image"] = package_image
    if apply:
        client = azureml.ml_client(target)
        result["steps"] = apply_online(checked, out_dir, client)
        result["applied"] = True
        details = {"instance_type": instance_type, "traffic": spec.traffic_steps[-1]}
        if package_image:
            details["image"] = package_image
    record_deployment(
        ws, model_name, version, kind="azure-online", target=f"{endpoint}/{deployment}",
        details=details,
    )  # fmt: skip
    return result


#: The name the demo and batch's ``deploy_azure_batch`` pair with.
deploy_azure_online = deploy_online
