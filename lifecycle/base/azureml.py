"""The thin layer that reaches Azure ML: nothing else in the toolkit talks to Azure.

Spec builders (``batch.azure``, ``serving.azure``) build azure-ai-ml entities offline and
dump them as YAML; only the functions here create an ``MLClient`` and call it. Tests cover
everything up to these calls (no machine here reaches Azure).

Which Azure ML workspace: a workspace entry in ``lifecycle.yaml`` may carry
``azure: {subscription_id, resource_group, workspace_name}``; otherwise the environment
variables ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP``, ``AZUREML_WORKSPACE_NAME``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.base.errors import DeploymentError

logger = logging.getLogger(__name__)

_ENV = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group": "AZURE_RESOURCE_GROUP",
    "workspace_name": "AZUREML_WORKSPACE_NAME",
}


@dataclass(frozen=True)
class AzureTarget:
    """The Azure ML workspace a deployment is applied to."""

    subscription_id: str
    resource_group: str
    workspace_name: str


def azure_target(settings: dict[str, Any] | None = None) -> AzureTarget:
    """The Azure ML workspace from ``settings`` or the environment.

    Raises:
        DeploymentError: a coordinate is missing (names the setting and the variable).
    """
    settings = settings or {}
    values: dict[str, str] = {}
    for key, env in _ENV.items():
        value = settings.get(key) or os.environ.get(env)
        if not value:
            raise DeploymentError(
                f"Azure ML {key} is not set: put it under 'azure:' in lifecycle.yaml or set ${env}"
            )
        values[key] = str(value)
    return AzureTarget(**values)


def ml_client(target: AzureTarget) -> Any:
    """An ``azure.ai.ml.MLClient`` for ``target`` with the default Azure credential chain.

    Raises:
        DeploymentError: the ``azure`` extra is not installed.
    """
    try:
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise DeploymentError(
            "The Azure ML SDK is not installed: pip install 'mlflow-lifecycle[azure]'"
        ) from exc
    return MLClient(
        DefaultAzureCredential(),
        subscription_id=target.subscription_id,
        resource_group_name=target.resource_group,
        workspace_name=target.workspace_name,
    )


def begin_create_or_update(client: Any, entity: Any, timeout: float = 3600.0) -> Any:
    """Create or update ``entity`` (endpoint, deployment, model, environment) and wait for the
    result."""
    kind = type(entity).__name__
    logger.info("Azure ML: creating or updating %s %s", kind, getattr(entity, "name", ""))
    if kind == "Model":
        return client.models.create_or_update(entity)
    if kind == "Environment":
        return client.environments.create_or_update(entity)
    if "OnlineEndpoint" in kind:
        return client.online_endpoints.begin_create_or_update(entity).result(timeout=timeout)
    if "OnlineDeployment" in kind:
        return client.online_deployments.begin_create_or_update(entity).result(timeout=timeout)
    if "BatchEndpoint" in kind:
        return client.batch_endpoints.begin_create_or_update(entity).result(timeout=timeout)
    if "BatchDeployment" in kind:
        return client.batch_deployments.begin_create_or_update(entity).result(timeout=timeout)
    raise DeploymentError(f"Unsupported Azure ML entity type '{kind}'")


def invoke_online(client: Any, endpoint: str, deployment: str, request_file: str) -> str:
    """Send ``request_file`` to one deployment of an online endpoint; return the answer.

    Raises:
        DeploymentError: the invocation failed (the deployment is not healthy).
    """
    logger.info("Azure ML: invoking %s/%s with %s", endpoint, deployment, request_file)
    try:
        return str(
            client.online_endpoints.invoke(
                endpoint_name=endpoint, deployment_name=deployment, request_file=request_file
            )
        )
    except Exception as exc:  # the SDK's HTTP errors vary; one line for the user
        raise DeploymentError(
            f"Smoke test of {endpoint}/{deployment} failed; traffic was not moved: {exc}".splitlines()[
                0
            ]
        ) from exc


def package_model(client: Any, name: str, version: str, package: Any) -> Any:
    """Build the model package (``ml_client.models.package``); returns its Environment."""
    logger.info("Azure ML: packaging %s:%s as %s", name, version, package.target_environment_id)
    return client.models.package(name, str(version), package)


def set_online_traffic(
    client: Any, endpoint: str, traffic: dict[str, int], timeout: float = 3600.0
) -> Any:
    """Set an online endpoint's traffic split (deployment name -> percent) and wait."""
    logger.info("Azure ML: traffic of %s -> %s", endpoint, traffic)
    ep = client.online_endpoints.get(name=endpoint)
    ep.traffic = dict(traffic)
    return client.online_endpoints.begin_create_or_update(ep).result(timeout=timeout)


def stage_model_files(model: Any, out: Path) -> None:
    """Copy an Azure ``Model`` entity's files to ``out/model`` (atomically) and point it there,
    so the spec folder is self-contained and movable."""
    import shutil

    model_dir = out / "model"
    src = Path(model.path)
    if src.resolve() == model_dir.resolve():
        return
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)
    model.path = str(model_dir.resolve())


def entity_yaml_data(entity: Any, *, kind: str) -> dict[str, Any]:
    """An azure-ai-ml entity as plain YAML-safe data (a model's path relative to its YAML)."""
    data = _plain(entity._to_dict())
    if kind == "model":
        data["path"] = "model"  # relative to the YAML file: the folder stays movable
    return data


def write_text_atomic(path: Path, text: str) -> str:
    """Write ``text`` to a temp name beside ``path``, then rename; return the path."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return str(path)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
