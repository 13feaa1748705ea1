"""Where each model version is deployed: serving processes, batch runs, Azure endpoints.

A deployment record is a model-version tag ``lifecycle.deployment.<kind>.<key>`` whose value
is a JSON object (``kind``, ``target``, ``since`` and kind-specific facts). Readable with
MLflow alone; ``lifecycle status`` lists them, and each is also a ``deploy`` event of the
model's audit history (``lifecycle history``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from lifecycle.base.audit import utcnow
from lifecycle.base.tags import DEPLOYMENT_TAG_PREFIX
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

KINDS = ("serving", "batch", "azure-online", "azure-batch", "spark")


def record_deployment(
    ws: Workspace,
    model_name: str,
    version: str | int,
    kind: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record on the version that it is deployed as ``kind`` at ``target``; return the record.

    ``target`` identifies the deployment (``host:port``, an output path, an endpoint name);
    recording the same kind and target again replaces the earlier record.
    """
    record = {"kind": kind, "target": target, "since": utcnow(), **(details or {})}
    key = DEPLOYMENT_TAG_PREFIX + kind + "." + _slug(target)
    ws.client().set_model_version_tag(
        model_name, str(version), key, json.dumps(record, default=str, sort_keys=True)
    )
    logger.info("recorded %s deployment of %s v%s at %s", kind, model_name, version, target)
    try:  # and in the model's history, so `lifecycle history` lists where it went
        from lifecycle.base.audit import record_event

        record_event(
            ws, model_name, "deploy", version=version, details={"kind": kind, "target": target}
        )
    except Exception as exc:  # the record itself is written; the history line is extra
        logger.warning("could not add the deployment to %s's history: %s", model_name, exc)
    return record


def list_deployments(ws: Workspace, model_name: str, version: str | int) -> list[dict[str, Any]]:
    """The deployment records of one version, oldest first."""
    mv = ws.client().get_model_version(model_name, str(version))
    out = []
    for key, value in (mv.tags or {}).items():
        if key.startswith(DEPLOYMENT_TAG_PREFIX):
            try:
                out.append(json.loads(value))
            except json.JSONDecodeError:
                out.append({"kind": key[len(DEPLOYMENT_TAG_PREFIX) :], "raw": value})
    out.sort(key=lambda r: str(r.get("since", "")))
    return out


def _slug(target: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("_")
    return slug[-200:] or "default"
