"""Azure ML no-code batch deployment specs for a registered MLflow model.

Owns the spec builder: a model registration (``AssetTypes.MLFLOW_MODEL``), a
``BatchEndpoint`` and a ``ModelBatchDeployment`` with ``ModelBatchDeploymentSettings``, built
with azure-ai-ml's own entities and dumped as YAML that its loaders (``load_model``,
``load_batch_endpoint``, ``load_batch_deployment``) read back. ``apply`` is a thin layer
over :mod:`lifecycle.base.azureml`, the only module that reaches Azure.

Azure's no-code batch driver scores each input file whole (``mini_batch_size`` counts
files) and appends headerless rows to ``predictions.csv``; its ``error_threshold`` counts
failed files, so only the rates 0 (fail on the first error) and 1 (ignore errors) translate,
other thresholds are given as a count.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.azureml import entity_yaml_data, stage_model_files, write_text_atomic
from lifecycle.base.errors import DeploymentError
from lifecycle.base.fetch import fetch_model
from lifecycle.base.tags import MODEL_NAME_TAG, MODEL_VERSION_TAG, SOURCE_WORKSPACE_NAME_TAG
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)
# azure-ai-ml logs a warning for every experimental schema class it touches while loading.
logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{2,31}$")


@dataclass
class BatchDeploymentSpec:
    """The three azure-ai-ml entities of a no-code batch deployment."""

    model: Any
    endpoint: Any
    deployment: Any


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.match(value):
        raise DeploymentError(
            f"Invalid Azure ML {kind} name '{value}': expected 3-32 letters, digits or '-', "
            "starting with a letter"
        )


def error_threshold_for(max_error_rate: float, error_threshold: int | None = None) -> int:
    """Azure's ``error_threshold`` (failed files tolerated, -1 = all) for a rate or a count.

    Raises:
        DeploymentError: a rate strictly between 0 and 1 with no explicit count.
    """
    if error_threshold is not None:
        if error_threshold < -1:
            raise DeploymentError(f"Invalid error threshold {error_threshold}: expected -1 or more")
        return int(error_threshold)
    if max_error_rate <= 0:
        return 0
    if max_error_rate >= 1:
        return -1
    raise DeploymentError(
        f"Azure ML batch counts failed files, not a rate: --max-error-rate {max_error_rate:g} "
        "cannot be translated. Use 0 (fail on the first error), 1 (ignore errors) or an "
        "explicit error threshold count"
    )


def build_batch_deployment(
    model_name: str,
    version: str | int,
    *,
    endpoint: str,
    compute: str,
    model_path: str | Path,
    deployment_name: str = "default",
    mini_batch_size: int = 10,
    instance_count: int = 1,
    max_concurrency_per_instance: int = 1,
    max_error_rate: float = 0.0,
    error_threshold: int | None = None,
    max_retries: int = 3,
    timeout_s: int = 300,
    output_file_name: str = "predictions.csv",
    logging_level: str = "info",
    tags: dict[str, str] | None = None,
) -> BatchDeploymentSpec:
    """Build the model registration, batch endpoint and no-code batch deployment entities.

    Args:
        model_name: the registered model's name (also the Azure ML model name).
        version: the model version (also the Azure ML model version).
        endpoint: batch endpoint name.
        compute: Azure ML compute cluster name.
        model_path: local MLflow model directory to register.
        mini_batch_size: files per mini-batch.

    Raises:
        DeploymentError: a name or setting Azure would refuse.
    """
    from azure.ai.ml.constants import AssetTypes, BatchDeploymentOutputAction
    from azure.ai.ml.entities import (
        BatchEndpoint,
        BatchRetrySettings,
        Model,
        ModelBatchDeployment,
        ModelBatchDeploymentSettings,
    )

    _check_name("endpoint", endpoint)
    _check_name("deployment", deployment_name)
    if not compute:
        raise DeploymentError("Azure ML compute name is empty: pass --compute CLUSTER")
    if mini_batch_size < 1 or instance_count < 1 or max_concurrency_per_instance < 1:
        raise DeploymentError(
            "mini_batch_size, instance_count and max_concurrency_per_instance must be 1 or more"
        )
    if not (Path(model_path) / "MLmodel").is_file():
        raise DeploymentError(f"'{model_path}' is not an MLflow model directory (no MLmodel file)")
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
    ep = BatchEndpoint(
        name=endpoint, description=f"Batch scoring for {model_name}", tags=dict(all_tags)
    )
    deployment = ModelBatchDeployment(
        name=deployment_name,
        endpoint_name=endpoint,
        model=f"azureml:{model_name}:{version}",
        compute=compute,
        description=f"No-code MLflow batch deployment of {model_name} v{version}",
        tags=dict(all_tags),
        settings=ModelBatchDeploymentSettings(
            mini_batch_size=mini_batch_size,
            instance_count=instance_count,
            max_concurrency_per_instance=max_concurrency_per_instance,
            output_action=BatchDeploymentOutputAction.APPEND_ROW,
            output_file_name=output_file_name,
            retry_settings=BatchRetrySettings(max_retries=max_retries, timeout=timeout_s),
            error_threshold=error_threshold_for(max_error_rate, error_threshold),
            logging_level=logging_level,
        ),
    )
    return BatchDeploymentSpec(model=model, endpoint=ep, deployment=deployment)


def write_batch_specs(spec: BatchDeploymentSpec, out_dir: str | Path) -> dict[str, str]:
    """Dump ``spec`` as ``model.yml``, ``endpoint.yml`` and ``deployment.yml`` in ``out_dir``.

    The model files are copied to ``out_dir/model`` so ``model.yml`` is self-contained.

    Returns:
        kind -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage_model_files(spec.model, out)
    files = {}
    for kind, entity in (
        ("model", spec.model),
        ("endpoint", spec.endpoint),
        ("deployment", spec.deployment),
    ):
        data = entity_yaml_data(entity, kind=kind)
        if kind == "deployment":
            data = _flat_deployment(data)
        files[kind] = write_text_atomic(out / f"{kind}.yml", yaml.safe_dump(data, sort_keys=False))
    return files


def _flat_deployment(data: dict[str, Any]) -> dict[str, Any]:
    """The deployment in the flat YAML form ``load_batch_deployment`` (and ``az ml``) read.

    ``ModelBatchDeployment`` nests its settings under ``settings``; the SDK's
    ``BatchDeploymentSchema`` takes the same fields at the top level.
    """
    flat = {k: v for k, v in data.items() if k not in ("settings", "environment_variables")}
    settings = dict(data.get("settings") or {})
    instance_count = settings.pop("instance_count", None)
    if instance_count is not None:
        flat.setdefault("resources", {})["instance_count"] = instance_count
    env = {
        **(data.get("environment_variables") or {}),
        **(settings.pop("environment_variables", None) or {}),
    }
    if env:
        flat["environment_variables"] = env
    flat.update(settings)
    return flat


def load_batch_specs(out_dir: str | Path) -> BatchDeploymentSpec:
    """Read the specs back with azure-ai-ml's own loaders (checks what Azure would accept)."""
    from azure.ai.ml import load_batch_deployment, load_batch_endpoint, load_model

    out = Path(out_dir)
    try:
        return BatchDeploymentSpec(
            model=load_model(source=str(out / "model.yml")),
            endpoint=load_batch_endpoint(source=str(out / "endpoint.yml")),
            deployment=load_batch_deployment(source=str(out / "deployment.yml")),
        )
    except Exception as exc:  # the SDK raises its own validation error types
        raise DeploymentError(
            f"azure-ai-ml rejects the specs in '{out}': {exc}".splitlines()[0]
        ) from exc


def deploy_azure_batch(
    ws: Workspace,
    model_name: str,
    version: str | int,
    *,
    endpoint: str,
    compute: str,
    out_dir: str | Path = "azure-batch",
    apply: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Write (and with ``apply``, create) the batch deployment of ``model_name`` v``version``.

    The model files come from ``ws``'s registry; the YAML is checked with the SDK's loaders
    before anything is applied.

    Returns:
        ``{"files": {kind: path}, "endpoint", "deployment", "model", "applied"}``.

    Raises:
        ModelNotFoundError: the version does not exist in ``ws``.
        DeploymentError: a setting Azure would refuse, or the SDK rejects the specs.
    """
    import tempfile

    from lifecycle.base.refs import get_model_version

    get_model_version(ws, model_name, version)
    with tempfile.TemporaryDirectory(prefix="lifecycle-azure-batch-") as tmp:
        local = fetch_model(
            ws, f"models:/{model_name}/{version}", tmp, error=DeploymentError,
            restricted_action="deploy",
        ).path  # fmt: skip
        spec = build_batch_deployment(
            model_name,
            version,
            endpoint=endpoint,
            compute=compute,
            model_path=local,
            tags={SOURCE_WORKSPACE_NAME_TAG: ws.name},
            **settings,
        )
        files = write_batch_specs(spec, out_dir)
    checked = load_batch_specs(out_dir)
    result: dict[str, Any] = {
        "files": files,
        "model": f"{model_name}:{version}",
        "endpoint": endpoint,
        "deployment": checked.deployment.name,
        "applied": False,
    }
    from lifecycle.base.deployments import record_deployment

    details: dict[str, Any] = {"applied": False, "specs": str(Path(out_dir).resolve())}
    if apply:
        from lifecycle.base import azureml

        client = azureml.ml_client(azureml.azure_target(ws.extra.get("azure")))
        for entity in (checked.model, checked.endpoint, checked.deployment):
            azureml.begin_create_or_update(client, entity)
        result["applied"] = True
        details = {"compute": compute}
    record_deployment(
        ws, model_name, version, kind="azure-batch",
        target=f"{endpoint}/{checked.deployment.name}", details=details,
    )  # fmt: skip
    return result
