"""Azure ML model packaging for the image ``lifecycle package`` builds (issue #19).

``lifecycle deploy azure-online … --package --image IMAGE`` deploys that image instead of
Azure's no-code MLflow server. Three specs, each built with azure-ai-ml's entities and read
back with its loaders:

- ``environment.yml``: an Environment on the image, with its inference routes (the image's
  own server on port 8080: ``/health`` for liveness and readiness, ``/invocations``
  for scoring, which answers MLflow's and Azure's ``input_data`` payloads);
- ``package.yml``: a ``ModelPackage`` of the registered model on that environment with a
  *custom* inferencing server (the image's), the model copied in (``download``), target
  environment ``NAME-lifecycle-pkg``: what ``ml_client.models.package`` builds, so the
  deployment runs an image with no link to the registry at run time;
- the deployment (``deployment.yml``, written by :mod:`serving.azure`) names the package's
  environment (``azureml:NAME-lifecycle-pkg@latest``) and no model.

azure-ai-ml 1.35.2 cannot load a package spec with a custom server: its ``RouteSchema``
subclasses ``PatchedSchemaMeta`` (the metaclass) instead of using it, so marshmallow refuses
the nested routes ("`Nested` fields must be passed a `Schema`"), and the entity's
``_to_dict`` fails the same way. :func:`load_package_spec` tries the SDK's loader as it is,
and only on that exact error loads with the same schema's routes declared correctly.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from lifecycle.base.errors import DeploymentError

logger = logging.getLogger(__name__)

PORT = 8080
#: The routes of the image's server (``lifecycle serve``).
ROUTES = {
    "liveness_route": "/health",
    "readiness_route": "/health",
    "scoring_route": "/invocations",
}
_SDK_ROUTE_BUG = "`Nested` fields must be passed a `Schema`"


def asset_name(model_name: str, suffix: str) -> str:
    """An Azure ML asset name for ``model_name`` (letters, digits, '-', '_', '.')."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-.") or "model"
    return f"{base[:200]}-{suffix}"


def image_environment(model_name: str, version: str | int, image: str) -> Any:
    """The Environment running ``image`` with its server's routes.

    Raises:
        DeploymentError: ``image`` is not an image reference.
    """
    from azure.ai.ml.entities import Environment

    if not image or any(c.isspace() for c in image) or image.startswith("-"):
        raise DeploymentError(
            f"Invalid image '{image}': expected REGISTRY/NAME:TAG (the image of lifecycle package)"
        )
    return Environment(
        name=asset_name(model_name, "lifecycle-image"),
        version=str(version),
        image=image,
        inference_config={k: {"port": PORT, "path": p} for k, p in ROUTES.items()},
        description=f"lifecycle package image of {model_name} v{version}",
    )


def model_package(model_name: str, version: str | int, environment: Any) -> Any:
    """The ModelPackage of ``model_name`` v``version`` on ``environment`` (custom server)."""
    from azure.ai.ml.entities import BaseEnvironment, CustomInferencingServer, ModelPackage
    from azure.ai.ml.entities._assets._artifacts._package.inferencing_server import (
        OnlineInferenceConfiguration,
        Route,
    )
    from azure.ai.ml.entities._assets._artifacts._package.model_configuration import (
        ModelConfiguration,
    )

    def route(key: str) -> Any:
        return Route(port=str(PORT), path=ROUTES[key])

    return ModelPackage(
        target_environment=asset_name(model_name, "lifecycle-pkg"),
        base_environment_source=BaseEnvironment(
            type="EnvironmentAsset",
            resource_id=f"azureml:{environment.name}:{environment.version}",
        ),
        # The SDK's annotation omits the custom server its schema and REST mapping accept.
        inferencing_server=CustomInferencingServer(  # type: ignore[arg-type]
            inference_configuration=OnlineInferenceConfiguration(
                liveness_route=route("liveness_route"),
                readiness_route=route("readiness_route"),
                scoring_route=route("scoring_route"),
            )
        ),
        model_configuration=ModelConfiguration(mode="download"),
        environment_variables={
            "LIFECYCLE_SERVE_MODEL_NAME": model_name,
            "LIFECYCLE_SERVE_MODEL_VERSION": str(version),
        },
        tags={"mlflow-lifecycle/model": f"{model_name}:{version}"},
    )


def package_yaml_data(package: Any) -> dict[str, Any]:
    """``package.yml``'s content, in the SDK's YAML schema (``ModelPackageSchema``).

    Written from the entity's fields: the SDK's own dump fails on the custom server's
    routes (see the module docstring).
    """
    server = package.inferencing_server.inference_configuration
    return {
        "target_environment": package.target_environment_id,
        "base_environment_source": {
            # The REST enum's own spelling: the SDK passes this field through unchanged.
            "type": package.base_environment_source.type,
            "resource_id": package.base_environment_source.resource_id,
        },
        "inferencing_server": {
            "type": "custom",
            "inference_configuration": {
                key: {"port": str(getattr(server, key).port), "path": getattr(server, key).path}
                for key in ROUTES
            },
        },
        "model_configuration": {"mode": package.model_configuration.mode},
        "environment_variables": dict(package.environment_variables or {}),
        "tags": dict(package.tags or {}),
    }


def sdk_error_line(path: str | Path, exc: BaseException) -> str:
    """One line for an azure-ai-ml loader's refusal: each field with its message (its own
    text opens with a bare "Validation for …Schema failed:" line)."""
    messages = getattr(exc, "messages", None)
    text = str(exc)
    if not isinstance(messages, dict) and "{" in text:
        try:  # the SDK re-raises marshmallow's field messages as JSON inside its text
            messages = json.loads(text[text.index("{") : text.rindex("}") + 1])
        except ValueError:
            messages = None
    if isinstance(messages, dict) and messages:

        def flat(prefix: str, value: Any) -> list[str]:
            if isinstance(value, dict):
                return [m for k, v in value.items() for m in flat(f"{prefix}{k}.", v)]
            if isinstance(value, list):
                return [f"{prefix[:-1]}: {'; '.join(str(v) for v in value)}"]
            return [f"{prefix[:-1]}: {value}"]

        detail = "; ".join(flat("", messages))
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        detail = lines[0] if lines else type(exc).__name__
    return f"azure-ai-ml rejects '{path}': {detail}"


def load_package_spec(path: str | Path) -> Any:
    """``package.yml`` read with azure-ai-ml's ``load_model_package`` (see the module
    docstring for the one SDK bug worked around).

    Raises:
        DeploymentError: the SDK rejects the file.
    """
    from azure.ai.ml import load_model_package

    try:
        return load_model_package(source=str(path))
    except Exception as exc:  # ValueError, marshmallow's, or the SDK's validation types
        if _SDK_ROUTE_BUG not in str(exc):
            raise DeploymentError(sdk_error_line(path, exc)) from exc
        logger.info("azure-ai-ml cannot load custom-server routes as shipped: fixing RouteSchema")
    _fix_route_schema()
    try:
        return load_model_package(source=str(path))
    except Exception as exc:
        raise DeploymentError(sdk_error_line(path, exc)) from exc


def _fix_route_schema() -> None:
    """Declare the SDK's route schema as it meant to (``metaclass=PatchedSchemaMeta``), with
    the same fields and post-load, on the online inference configuration's three routes."""
    from azure.ai.ml._schema.assets.package import online_inference_configuration as oic
    from azure.ai.ml._schema.core.schema_meta import PatchedSchemaMeta
    from marshmallow import fields, post_load

    class RouteSchema(metaclass=PatchedSchemaMeta):
        port = fields.Str()
        path = fields.Str()

        @post_load
        def make(self, data: dict[str, Any], **kwargs: Any) -> Any:
            from azure.ai.ml.entities._assets._artifacts._package.inferencing_server import (
                Route,
            )

            return Route(**data)

    declared = oic.OnlineInferenceConfigurationSchema._declared_fields
    for key in ROUTES:
        setattr(declared[key], "nested", RouteSchema)  # noqa: B010 (marshmallow's Nested)
