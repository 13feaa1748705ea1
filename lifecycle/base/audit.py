"""The audit history of a registered model, kept in the workspace itself.

Every transition, promotion, rollback, gate result, deployment and monitoring action is one
event: a registered-model tag ``lifecycle.audit.<UTC timestamp>.<random>`` whose value is a
JSON object. Anyone can read it with MLflow alone (``MlflowClient().get_registered_model``),
and it moves with nothing but the registry. Events on a version also get a short tag on
that version (``lifecycle.last_event``).
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import logging
import os
import secrets
from typing import Any

from lifecycle.base.tags import AUDIT_TAG_PREFIX, LAST_EVENT_TAG
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

_MAX_VALUE = 90_000  # MLflow allows 100,000 characters in a registry tag value


def current_user() -> str:
    """Who acts: ``$LIFECYCLE_USER``, else the login name."""
    try:
        return os.environ.get("LIFECYCLE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def utcnow() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def record_event(
    ws: Workspace,
    model_name: str,
    action: str,
    *,
    version: str | int | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one event to ``model_name``'s audit history in ``ws`` and return it.

    Args:
        ws: the workspace whose registry holds the model.
        model_name: the registered model.
        action: what happened (``transition``, ``promote``, ``rollback``, ``gate``,
            ``deploy``, ``monitor``, ``tag``...).
        version: the model version concerned, if any.
        details: JSON-serialisable facts (from/to stage, gate values, ...).
    """
    now = utcnow()
    event: dict[str, Any] = {
        "at": now,
        "by": current_user(),
        "action": action,
        "model": model_name,
        "version": None if version is None else str(version),
        "workspace": ws.name,
        **(details or {}),
    }
    value = json.dumps(event, default=str, sort_keys=True)
    if len(value) > _MAX_VALUE:
        event = {k: event[k] for k in ("at", "by", "action", "model", "version", "workspace")}
        event["truncated"] = True
        value = json.dumps(event, sort_keys=True)
    stamp = now.replace("-", "").replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")
    key = f"{AUDIT_TAG_PREFIX}{stamp}.{secrets.token_hex(3)}"
    client = ws.client()
    client.set_registered_model_tag(model_name, key, value)
    if version is not None:
        client.set_model_version_tag(model_name, str(version), LAST_EVENT_TAG, f"{action} {now}")
    logger.info("audit %s %s v%s in %s", action, model_name, version, ws.name)
    return event


def read_history(ws: Workspace, model_name: str) -> list[dict[str, Any]]:
    """All audit events of ``model_name`` in ``ws``, oldest first."""
    from lifecycle.base.refs import get_registered_model

    rm = get_registered_model(ws, model_name)
    tags = rm.tags or {}
    events = []
    for key in sorted(k for k in tags if k.startswith(AUDIT_TAG_PREFIX)):
        try:
            events.append(json.loads(tags[key]))
        except json.JSONDecodeError:
            events.append(
                {"at": key[len(AUDIT_TAG_PREFIX) :], "action": "unreadable", "raw": tags[key]}
            )
    events.sort(key=lambda e: str(e.get("at", "")))
    return events
