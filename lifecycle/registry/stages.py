"""Registry stages and aliases of model versions: transition and rollback.

A transition writes the state three ways so that every backend answers:

- the MLflow stage (``None``, ``Staging``, ``Production``, ``Archived``), always in canonical
  case because Azure ML compares stage names case-sensitively;
- the mirrored alias (``staging``, ``production``), the successor of stages in MLflow, so
  ``models:/NAME/Production`` and ``models:/NAME@production`` resolve to the same version;
- a version tag ``lifecycle.stage`` that any client can read.

Which of the first two mechanisms a workspace has comes from its configuration
(``supports_stages`` / ``supports_aliases``) or, when not configured, is detected on the first
call the backend refuses; the result is remembered per registry URI for the process. Nothing
is decided from the URI scheme alone. Every transition and rollback is recorded in the
workspace's audit history (:mod:`lifecycle.base.audit`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lifecycle.base.audit import read_history, record_event
from lifecycle.base.errors import LifecycleError, ModelNotFoundError
from lifecycle.base.faults import fault_point
from lifecycle.base.locks import model_lock
from lifecycle.base.refs import (
    STAGE_ALIASES,
    canonical_stage,
    get_model_version,
    get_registered_model,
    search_versions,
)
from lifecycle.base.tags import FAILED_TAG, STAGE_TAG
from lifecycle.base.workspaces import Workspace, quiet_mlflow_warnings
from lifecycle.registry.journal import require_none

logger = logging.getLogger(__name__)


_CAPS: dict[tuple[str, str], dict[str, bool]] = {}
_CAPS_LOCK = threading.Lock()


class CapabilityError(LifecycleError):
    """A workspace's registry supports neither stages nor aliases."""

    error_code = "INVALID_STATE"
    http_status = 409


def capabilities(ws: Workspace) -> dict[str, bool]:
    """Which state mechanisms ``ws`` has: ``{"stages": bool, "aliases": bool}``.

    Configured flags win; otherwise both are assumed present until the backend refuses one
    (see :func:`_unsupported`), after which the refusal is remembered for this process.
    """
    with _CAPS_LOCK:
        detected = dict(_CAPS.get((ws.tracking_uri, ws.registry_uri), {}))
    stages = ws.supports_stages if ws.supports_stages is not None else detected.get("stages", True)
    aliases = (
        ws.supports_aliases if ws.supports_aliases is not None else detected.get("aliases", True)
    )
    return {"stages": bool(stages), "aliases": bool(aliases)}


def _mark_unsupported(ws: Workspace, what: str, exc: Exception) -> None:
    with _CAPS_LOCK:
        _CAPS.setdefault((ws.tracking_uri, ws.registry_uri), {})[what] = False
    logger.warning(
        "workspace %s refused registry %s (%s); using the other mechanism from now on",
        ws.name,
        what,
        str(exc).splitlines()[0][:200],
    )


def _unsupported(exc: Exception) -> bool:
    """True when ``exc`` says the backend lacks an API (not that the call was wrong)."""
    code = str(getattr(exc, "error_code", ""))
    text = str(exc).lower()
    if code in ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED"):
        return True
    markers = ("not supported", "unsupported", "not implemented", "404", "405", "no such endpoint")
    return any(m in text for m in markers)


def _set_stage(ws: Workspace, name: str, version: str, stage: str, archive: bool) -> bool:
    """Set the MLflow stage; False when the workspace has no stages."""
    if not capabilities(ws)["stages"]:
        return False
    client = ws.client()
    try:
        with quiet_mlflow_warnings():
            client.transition_model_version_stage(
                name, version, stage, archive_existing_versions=archive
            )
        return True
    except Exception as exc:
        if ws.supports_stages is None and _unsupported(exc):
            _mark_unsupported(ws, "stages", exc)
            return False
        raise


def _set_alias(ws: Workspace, name: str, alias: str, version: str) -> bool:
    """Point ``alias`` at ``version``; False when the workspace has no aliases."""
    if not capabilities(ws)["aliases"]:
        return False
    try:
        ws.client().set_registered_model_alias(name, alias, version)
        return True
    except Exception as exc:
        if ws.supports_aliases is None and _unsupported(exc):
            _mark_unsupported(ws, "aliases", exc)
            return False
        raise


def delete_alias(ws: Workspace, name: str, alias: str) -> None:
    if not capabilities(ws)["aliases"]:
        return
    try:
        ws.client().delete_registered_model_alias(name, alias)
    except Exception as exc:
        if ws.supports_aliases is None and _unsupported(exc):
            _mark_unsupported(ws, "aliases", exc)
            return
        logger.debug("alias %s of %s not removed: %s", alias, name, exc)


def aliases_of(ws: Workspace, name: str) -> dict[str, str]:
    """Alias -> version of registered model ``name`` (empty where aliases are unsupported)."""
    if not capabilities(ws)["aliases"]:
        return {}
    rm = get_registered_model(ws, name)
    return {str(k): str(v) for k, v in (getattr(rm, "aliases", None) or {}).items()}


def versions_in_stage(ws: Workspace, name: str, stage: str) -> list[str]:
    """Versions of ``name`` holding ``stage`` (by MLflow stage and by mirrored alias), newest first."""
    stage = canonical_stage(stage)
    found: set[str] = set()
    if capabilities(ws)["stages"]:
        found |= {
            str(v.version)
            for v in search_versions(ws, name)
            if str(getattr(v, "current_stage", "")).lower() == stage.lower()
        }
    alias = STAGE_ALIASES.get(stage)
    if alias:
        holder = aliases_of(ws, name).get(alias)
        if holder:
            found.add(holder)
    return sorted(found, key=int, reverse=True)


def current_stage(ws: Workspace, name: str, version: str) -> str:
    """The stage of one version: MLflow stage, else the ``lifecycle.stage`` tag, else None."""
    mv = get_model_version(ws, name, version)
    stage = str(getattr(mv, "current_stage", "") or "")
    if capabilities(ws)["stages"] and stage:
        return canonical_stage(stage) if stage.lower() != "none" else "None"
    return str((mv.tags or {}).get(STAGE_TAG) or "None")


def move_stage(
    ws: Workspace, name: str, version: str, stage: str, *, alias: str | None, archive: bool
) -> dict[str, Any]:
    """Do a transition without recording it; returns what changed."""
    client = ws.client()
    mv = get_model_version(ws, name, version)
    version = str(mv.version)
    from_stage = current_stage(ws, name, version)
    previous = (
        [v for v in versions_in_stage(ws, name, stage) if v != version]
        if stage in (STAGE_ALIASES)
        else []
    )
    fault_point("after_read_holders")
    archive = archive and stage in STAGE_ALIASES
    stage_written = _set_stage(ws, name, version, stage, archive)
    mirrored = STAGE_ALIASES.get(stage)
    alias_written = False
    if mirrored:
        alias_written = _set_alias(ws, name, mirrored, version)
    # A version that leaves a stage loses that stage's alias.
    held = aliases_of(ws, name)
    for st, al in STAGE_ALIASES.items():
        if st != stage and held.get(al) == version:
            delete_alias(ws, name, al)
    client.set_model_version_tag(name, version, STAGE_TAG, stage)
    archived: list[str] = []
    if archive:
        for old in previous:
            # MLflow archived the stage holders already; an alias-only holder it did not see.
            if not stage_written or str(client.get_model_version(name, old).current_stage) != (
                "Archived"
            ):
                _set_stage(ws, name, old, "Archived", False)
            client.set_model_version_tag(name, old, STAGE_TAG, "Archived")
            archived.append(old)
    custom_alias = None
    if alias:
        if not _set_alias(ws, name, alias, version):
            raise CapabilityError(
                f"Workspace '{ws.name}' does not support registry aliases; cannot set alias "
                f"'{alias}'"
            )
        custom_alias = alias
    if not stage_written and not alias_written and stage in STAGE_ALIASES:
        raise CapabilityError(
            f"Workspace '{ws.name}' supports neither registry stages nor aliases; "
            f"cannot move {name} v{version} to {stage}"
        )
    return {
        "workspace": ws.name,
        "name": name,
        "version": version,
        "from_stage": from_stage,
        "to_stage": stage,
        "archived": archived,
        "previous": previous,
        "alias": custom_alias,
        "stage_written": stage_written,
        "alias_written": alias_written,
    }


def transition(
    ws: Workspace,
    name: str,
    version: str | int,
    stage: str,
    *,
    alias: str | None = None,
    archive_existing: bool = True,
    record: bool = True,
) -> dict[str, Any]:
    """Move ``name`` v``version`` to ``stage`` in ``ws`` and mirror it as an alias.

    Args:
        ws: the workspace.
        name: registered model name.
        version: the version to move.
        stage: None, Staging, Production or Archived, in any letter case.
        alias: an extra free-form alias (``champion``, ``challenger``) to point at it.
        archive_existing: archive the versions that held ``stage`` before (Staging and
            Production only).
        record: append the transition to the audit history.

    Returns:
        ``{"workspace", "name", "version", "from_stage", "to_stage", "archived", "alias", ...}``.

    Raises:
        InvalidStageError: unknown stage (the message lists the allowed ones).
        ModelNotFoundError: unknown model or version.
        CapabilityError: the workspace can express the state neither way.
        UnfinishedPromotionError: a killed promotion must be repaired first.
        RegistryBusyError: another command held the model's lock too long.
    """
    stage = canonical_stage(stage)
    with model_lock(ws, name, purpose="transition"):  # the holders read and written as one step
        require_none(ws, name)
        result = move_stage(ws, name, str(version), stage, alias=alias, archive=archive_existing)
        if record:
            record_event(ws, name, "transition", version=result["version"], details=_audit(result))
    return result


def _audit(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("from_stage", "to_stage", "archived", "alias") if k in result}


def rollback(
    ws: Workspace, name: str, stage: str = "Production", *, record: bool = True
) -> dict[str, Any]:
    """Put back the version that held ``stage`` before the current one; archive the current.

    The previous holder is read from the audit history (transitions, promotions and
    rollbacks into ``stage``); without history, the newest archived version older than the
    current one is used.

    Returns:
        ``{"workspace", "name", "stage", "from_version", "to_version", "archived"}``.

    Raises:
        ModelNotFoundError: no version holds ``stage``, or none held it before.
    """
    stage = canonical_stage(stage)
    with model_lock(ws, name, purpose="rollback"):
        require_none(ws, name)
        return _rollback(ws, name, stage, record)


def _rollback(ws: Workspace, name: str, stage: str, record: bool) -> dict[str, Any]:
    holders = versions_in_stage(ws, name, stage)
    if not holders:
        get_registered_model(ws, name)
        raise ModelNotFoundError(
            f"Model '{name}' has no version in stage '{stage}' in workspace '{ws.name}'; "
            "nothing to roll back"
        )
    current = holders[0]
    target = _previous_holder(ws, name, stage, current)
    if target is None:
        raise ModelNotFoundError(
            f"No earlier version of model '{name}' held stage '{stage}' in workspace "
            f"'{ws.name}' (current: version {current}); nothing to roll back to"
        )
    moved = move_stage(ws, name, target, stage, alias=None, archive=True)
    for other in holders:
        if other != target and other not in moved["archived"]:
            move_stage(ws, name, other, "Archived", alias=None, archive=False)
            moved["archived"].append(other)
    result = {
        "workspace": ws.name,
        "name": name,
        "stage": stage,
        "from_version": current,
        "to_version": target,
        "archived": moved["archived"],
    }
    if record:
        record_event(
            ws,
            name,
            "rollback",
            version=target,
            details={
                "from_version": current,
                "to_version": target,
                "to_stage": stage,
                "from_stage": moved["from_stage"],
                "archived": moved["archived"],
            },
        )
    return result


def previous_holder(ws: Workspace, name: str, stage: str) -> str | None:
    """The version a :func:`rollback` of ``stage`` would put back, or None (no holder, or
    none before it)."""
    holders = versions_in_stage(ws, name, canonical_stage(stage))
    return _previous_holder(ws, name, canonical_stage(stage), holders[0]) if holders else None


def _previous_holder(ws: Workspace, name: str, stage: str, current: str) -> str | None:
    existing = {str(v.version): v for v in search_versions(ws, name)}

    def usable(version: str) -> bool:
        mv = existing.get(version)
        return mv is not None and (mv.tags or {}).get(FAILED_TAG) != "true"

    history = read_history(ws, name)
    # A version rolled back *from* was taken out for a reason: a second rollback goes
    # further back instead of putting it back (to restore it, transition it explicitly).
    rolled_back = {
        str(e["from_version"])
        for e in history
        if e.get("action") == "rollback"
        and e.get("to_stage") == stage
        and e.get("from_version") is not None
    }
    entered = [
        str(e["version"])
        for e in history
        if e.get("action") in ("transition", "promote", "rollback")
        and e.get("to_stage") == stage
        and e.get("version") is not None
    ]
    for version in reversed(entered):
        if version != current and version not in rolled_back and usable(version):
            return version
    older = [
        v
        for v, mv in existing.items()
        if int(v) < int(current)
        and v not in rolled_back
        and usable(v)
        and (
            str(getattr(mv, "current_stage", "")) == "Archived"
            or (mv.tags or {}).get(STAGE_TAG) == "Archived"
        )
    ]
    return max(older, key=int) if older else None
