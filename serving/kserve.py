"""``lifecycle deploy kserve``: a KServe ``InferenceService`` for an image made by
``lifecycle package`` (issue #19).

The image serves the Open Inference Protocol (V2) itself, with the model baked in. KServe's
``protocolVersion`` lives on the predictor's ``model:`` form, which runs a *ServingRuntime*;
so two objects are written, each checked with the kserve SDK's own classes in the tests:

- ``servingruntime.yaml``: a ``ServingRuntime`` (``serving.kserve.io/v1alpha1``) whose one
  ``kserve-container`` is the image, speaking ``v2``, for the model format
  ``mlflow-lifecycle`` (never auto-selected: only services that name it use it), with
  readiness on ``/v2/health/ready`` and liveness on ``/v2/health/live``;
- ``inferenceservice.yaml``: the ``InferenceService`` (``serving.kserve.io/v1beta1``) whose
  predictor is ``model: {modelFormat: mlflow-lifecycle, runtime: …, protocolVersion: v2}``
  with no ``storageUri`` (nothing to download: the model is in the image).

The V2 routes answer to the registry's model name and version
(``LIFECYCLE_SERVE_MODEL_NAME`` / ``_VERSION``): ``/v2/models/NAME/versions/V/infer``.
Nothing here talks to a cluster: ``kubectl apply -f DIR/`` does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.errors import DeploymentError
from lifecycle.base.files import atomic_write_text
from lifecycle.base.tags import DIGEST_TAG
from lifecycle.base.workspaces import Workspace

API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_API_VERSION = "serving.kserve.io/v1alpha1"
CONTAINER = "kserve-container"  # the name KServe gives the predictor's container
MODEL_FORMAT = "mlflow-lifecycle"
PORT = 8080
SPEC_FILE = "inferenceservice.yaml"
RUNTIME_FILE = "servingruntime.yaml"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def service_name(model: str, version: str | int) -> str:
    """A valid InferenceService name for a model version (``churn-v3``)."""
    base = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-") or "model"
    if not base[0].isalpha():
        base = "m-" + base
    return f"{base[:40].rstrip('-')}-v{version}"


def inference_service(
    model: str,
    version: str | int,
    *,
    image: str,
    digest: str | None = None,
    workspace: str | None = None,
    service: str | None = None,
    namespace: str | None = None,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    cpu: str = "1",
    memory: str = "2Gi",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ServingRuntime and InferenceService manifests (dicts, as ``kubectl`` reads them).

    Raises:
        DeploymentError: a name, replica count or resource quantity Kubernetes would refuse.
    """
    name = service or service_name(model, version)
    if len(name) > 63 or not _DNS1035.match(name):
        raise DeploymentError(
            f"Invalid InferenceService name '{name}': expected lowercase letters, digits and "
            "'-', starting with a letter, at most 63 characters"
        )
    if not image or any(c.isspace() for c in image) or image.startswith("-"):
        raise DeploymentError(f"Invalid image '{image}': expected REGISTRY/NAME:TAG")
    if min_replicas < 0 or (max_replicas is not None and max_replicas < max(1, min_replicas)):
        raise DeploymentError(
            f"Invalid replicas min {min_replicas} / max {max_replicas}: expected 0 <= min <= max"
        )
    for what, value in (("cpu", cpu), ("memory", memory)):
        if not _QUANTITY.match(value):
            raise DeploymentError(
                f"Invalid {what} '{value}': expected a Kubernetes quantity such as 500m or 2Gi"
            )
    if namespace and not _DNS1035.match(namespace):
        raise DeploymentError(f"Invalid namespace '{namespace}': expected a DNS label")
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "LIFECYCLE_SERVE_PORT", "value": str(PORT)},
            {"name": "LIFECYCLE_SERVE_MODEL_NAME", "value": model},
            {"name": "LIFECYCLE_SERVE_MODEL_VERSION", "value": str(version)},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": PORT},
            "initialDelaySeconds": 1,
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
        },
    }
    metadata: dict[str, Any] = {
        "name": name,
        **({"namespace": namespace} if namespace else {}),
        "labels": {
            "app.kubernetes.io/managed-by": "mlflow-lifecycle",
            "mlflow-lifecycle/version": str(version),
        },
        "annotations": {
            "mlflow-lifecycle/model": model,
            "mlflow-lifecycle/model-uri": f"models:/{model}/{version}",
            **({"mlflow-lifecycle/digest": digest} if digest else {}),
            **({"mlflow-lifecycle/workspace": workspace} if workspace else {}),
        },
    }
    runtime = {
        "apiVersion": RUNTIME_API_VERSION,
        "kind": "ServingRuntime",
        "metadata": metadata,
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "1", "autoSelect": False}],
            "protocolVersions": ["v2"],
            "containers": [container],
        },
    }
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        **({"maxReplicas": max_replicas} if max_replicas is not None else {}),
        "model": {
            "name": CONTAINER,  # what KServe names it anyway (its SDK writes '' if absent)
            "modelFormat": {"name": MODEL_FORMAT, "version": "1"},
            "runtime": name,
            "protocolVersion": "v2",
            "resources": {
                "requests": {"cpu": cpu, "memory": memory},
                "limits": {"cpu": cpu, "memory": memory},
            },
        },
    }
    isvc = {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }
    return runtime, isvc


def deploy_kserve(
    ws: Workspace,
    model: str,
    version: str | int,
    *,
    image: str,
    out_dir: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """Write ``DIR/servingruntime.yaml`` and ``DIR/inferenceservice.yaml`` for ``model``
    v``version`` of ``ws`` and record them on the version (kind ``kserve``, not applied).

    Raises:
        ModelNotFoundError: no such version.
        RestrictedVersionError: the version is restricted (``--allow-restricted``).
        DeploymentError: as for :func:`inference_service`.
    """
    from lifecycle.base.deployments import record_deployment
    from lifecycle.base.refs import get_model_version
    from lifecycle.base.restrict import require_unrestricted

    mv = get_model_version(ws, model, version)
    tags = dict(mv.tags or {})
    require_unrestricted(ws, model, str(version), tags, action="deploy")
    runtime, manifest = inference_service(
        model, version, image=image, digest=tags.get(DIGEST_TAG), workspace=ws.name, **options
    )
    out = Path(out_dir)
    runtime_path = out / RUNTIME_FILE
    path = out / SPEC_FILE
    # The runtime first: a service naming a runtime that is not there yet is not ready.
    atomic_write_text(runtime_path, yaml.safe_dump(runtime, sort_keys=False), mkdir=True)
    atomic_write_text(path, yaml.safe_dump(manifest, sort_keys=False), mkdir=True)
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace", "default")
    record_deployment(
        ws, model, str(version), kind="kserve", target=f"{namespace}/{name}",
        details={"applied": False, "image": image, "spec": str(path.resolve())},
    )  # fmt: skip
    return {
        "file": str(path),
        "runtime_file": str(runtime_path),
        "service": name,
        "runtime": name,
        "namespace": namespace,
        "image": image,
    }
