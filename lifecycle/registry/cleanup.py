"""Removing what a failed registration or promotion created, and saying what could not be.

Each function returns what it left behind (None when nothing was), so the caller's error
message and audit event can name it instead of claiming a clean rollback. A leftover is
``final`` when it is the backend's rule (a workspace that refuses deletion: the version is
tagged failed and archived, the run ended FAILED) rather than a failure to retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lifecycle.base.refs import search_versions
from lifecycle.base.tags import FAILED_TAG
from lifecycle.base.workspaces import Workspace, use_workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Left:
    """Something a cleanup could not remove."""

    text: str
    final: bool = False

    def __str__(self) -> str:
        return self.text


def short_error(exc: BaseException) -> str:
    """``Type: message``, first line, at most 200 characters."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def discard_version(ws: Workspace, name: str, version: str) -> Left | None:
    """Delete ``name`` v``version``; where deletion is refused, tag it failed and archive it."""
    client = ws.client()
    reason = "the workspace refuses deletion"
    if ws.supports_delete is not False:
        try:
            client.delete_model_version(name, version)
            return None
        except Exception as exc:
            reason = short_error(exc)
            logger.warning("could not delete %s v%s (%s); tagging it failed", name, version, reason)
    try:
        client.set_model_version_tag(name, version, FAILED_TAG, "true")
        from lifecycle.registry.stages import aliases_of, delete_alias, move_stage

        for alias, holder in aliases_of(ws, name).items():
            if holder == version:
                delete_alias(ws, name, alias)
        move_stage(ws, name, version, "Archived", alias=None, archive=False)
        return Left(
            f"{name} version {version} (not deleted: {reason}; tagged {FAILED_TAG}, archived)",
            final=ws.supports_delete is False,
        )
    except Exception as exc:
        logger.exception("could not tag %s v%s as failed", name, version)
        return Left(
            f"{name} version {version} (neither deleted nor tagged failed: {short_error(exc)})"
        )


def discard_run(ws: Workspace, run_id: str) -> Left | None:
    """End run ``run_id`` as FAILED, delete its artifacts, then delete the run.

    MLflow's ``delete_run`` only marks a run deleted; its row stays until ``mlflow gc``
    purges it, but its artifacts are removed here, not left on disk.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = ws.client()
    left: list[str] = []
    refused = False
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        logger.debug("run %s already gone: %s", run_id, exc)
        return None
    if str(run.info.status) == "RUNNING":
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception as exc:
            left.append(f"still RUNNING ({short_error(exc)})")
    try:
        with use_workspace(ws):  # an mlflow-artifacts:/ URI is resolved against the server
            get_artifact_repository(run.info.artifact_uri).delete_artifacts()
    except Exception as exc:
        left.append(f"artifacts at {run.info.artifact_uri} not deleted ({short_error(exc)})")
    if run.info.lifecycle_stage != "deleted":
        if ws.supports_delete is False:
            refused = True
        else:
            try:
                client.delete_run(run_id)
            except Exception as exc:
                left.append(f"not deleted ({short_error(exc)})")
    if left:
        return Left(f"run {run_id}: " + "; ".join(left))
    if refused:
        return Left(
            f"run {run_id} (ended FAILED, artifacts deleted; the workspace refuses deletion)",
            final=True,
        )
    return None


def discard_empty_model(ws: Workspace, name: str) -> Left | None:
    """Delete registered model ``name`` if it has no versions left."""
    try:
        if search_versions(ws, name):
            return None
        ws.client().delete_registered_model(name)
        return None
    except Exception as exc:
        return Left(f"the empty registered model {name} ({short_error(exc)})")
