"""``status``: every model of every workspace at a glance.

Per workspace, each registered model; per version its stage and aliases, where it is deployed
(:func:`lifecycle.base.deployments.list_deployments`), whether it has a baseline, the last monitor
result (the ``lifecycle.monitor.last`` tag) and its flags (``needs_retraining``, ``drift``,
``failed``). A workspace that cannot be reached is reported with its error, not raised.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lifecycle.base.deployments import list_deployments
from lifecycle.base.refs import search_versions
from lifecycle.base.restrict import restriction
from lifecycle.base.tags import (
    BASELINE_TAG,
    FAILED_TAG,
    MONITOR_LAST_TAG,
    NEEDS_RETRAINING_REASON_TAG,
    NEEDS_RETRAINING_TAG,
    STAGE_TAG,
)
from lifecycle.base.workspaces import (
    Config,
    Workspace,
    check_reachable,
    quiet_mlflow_warnings,
    sqlite_path,
)
from lifecycle.monitor.profile import BASELINE_ARTIFACT

logger = logging.getLogger(__name__)


def status(config: Config, workspace: str | None = None) -> dict[str, Any]:
    """The state of every model in ``workspace`` (or in every configured workspace).

    Returns:
        ``{"workspaces": [{"name", "tracking_uri", "reachable", "error", "models": [{"name",
        "stages", "aliases", "flags", "versions": [{"version", "stage", "aliases",
        "deployments", "baseline", "monitor", "flags"}]}]}]}``.

    Raises:
        WorkspaceError: ``workspace`` is not configured.
    """
    names = [config.get(workspace).name] if workspace else sorted(config.workspaces)
    return {"workspaces": [workspace_status(config.get(n)) for n in names]}


def workspace_status(ws: Workspace) -> dict[str, Any]:
    """The models of one workspace (see :func:`status`); errors are reported in ``error``."""
    out: dict[str, Any] = {
        "name": ws.name,
        "tracking_uri": ws.tracking_uri,
        "reachable": True,
        "error": None,
        "models": [],
    }
    scheme = urlparse(ws.tracking_uri).scheme
    if scheme in ("http", "https"):
        # One quick /health probe instead of MLflow's long retry loop against a dead server.
        ok, reason = check_reachable(ws, timeout=5.0)
        if not ok:
            out.update(reachable=False, error=reason)
            return out
    if scheme == "sqlite":
        db = sqlite_path(ws.tracking_uri)
        if db is not None and not db.exists():
            out["note"] = "empty: the store has not been created yet"
            return out
    try:
        client = ws.client()
        models = []
        token = None
        while True:
            page = client.search_registered_models(max_results=200, page_token=token)
            models.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
        out["models"] = [_model_status(ws, rm) for rm in sorted(models, key=lambda m: str(m.name))]
    except Exception as exc:  # an unreachable workspace is part of the answer, not a failure
        logger.warning("cannot read workspace %s: %s", ws.name, exc)
        out.update(reachable=False, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    return out


def _model_status(ws: Workspace, rm: Any) -> dict[str, Any]:
    name = str(rm.name)
    aliases = {str(k): str(v) for k, v in (getattr(rm, "aliases", None) or {}).items()}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    with quiet_mlflow_warnings():
        versions = sorted(search_versions(ws, name), key=lambda v: int(v.version), reverse=True)
    rows = [
        _version_status(ws, name, mv, sorted(by_version.get(str(mv.version), [])))
        for mv in versions
    ]
    stages: dict[str, list[str]] = {}
    for row in rows:
        if row["stage"] not in ("None", "Archived"):
            stages.setdefault(row["stage"], []).append(row["version"])
    flags = sorted({f"v{r['version']}:{flag}" for r in rows for flag in r["flags"]})
    return {"name": name, "stages": stages, "aliases": aliases, "flags": flags, "versions": rows}


def _version_status(ws: Workspace, name: str, mv: Any, aliases: list[str]) -> dict[str, Any]:
    tags = dict(mv.tags or {})
    stage = str(getattr(mv, "current_stage", None) or "None")
    if stage == "None" and tags.get(STAGE_TAG):
        stage = tags[STAGE_TAG]  # workspaces without MLflow stages keep the stage in a tag
    last = None
    if tags.get(MONITOR_LAST_TAG):
        try:
            last = json.loads(tags[MONITOR_LAST_TAG])
        except json.JSONDecodeError:
            last = {"raw": tags[MONITOR_LAST_TAG]}
    flags = []
    if tags.get(NEEDS_RETRAINING_TAG, "").lower() == "true":
        flags.append(NEEDS_RETRAINING_TAG)
    if last and last.get("drift"):
        flags.append("drift")
    if tags.get(FAILED_TAG) == "true":
        flags.append("failed")
    deployments = [_with_liveness(d) for d in list_deployments(ws, name, str(mv.version))]
    restricted = restriction(tags)
    if restricted:
        live = [d for d in deployments if d.get("answering") is not False]
        flags.append("restricted (still deployed)" if live else "restricted")
    return {
        "version": str(mv.version),
        "stage": stage,
        "aliases": aliases,
        "run_id": mv.run_id,
        "deployments": deployments,
        "restricted": restricted,
        "baseline": bool(tags.get(BASELINE_TAG)) or _has_baseline_artifact(ws, mv.run_id),
        "monitor": last,
        "flags": flags,
        "needs_retraining_reason": tags.get(NEEDS_RETRAINING_REASON_TAG),
    }


def _with_liveness(record: dict[str, Any]) -> dict[str, Any]:
    """A serving record with ``answering``: whether its ``/health`` answers now (1 s), so a
    server that has stopped is not shown as serving."""
    if record.get("kind") != "serving" or not record.get("target"):
        return record
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{record['target']}/health", timeout=1.0) as resp:
            answering = resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        answering = False
    return {**record, "answering": answering}


def _has_baseline_artifact(ws: Workspace, run_id: str | None) -> bool:
    # A promotion copies the run's artifacts but not the version tags.
    if not run_id:
        return False
    try:
        folder = str(Path(BASELINE_ARTIFACT).parent)
        return any(a.path == BASELINE_ARTIFACT for a in ws.client().list_artifacts(run_id, folder))
    except Exception:  # an unreadable run only means "unknown": report no baseline
        return False
