"""A release policy's ``restrict`` section applied to the registry: each version of the model
in the workspaces the policy names gets (or loses) the ``lifecycle.restricted`` tag that
serve, score and deploy check (:mod:`lifecycle.base.restrict`)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from lifecycle.base.audit import record_event
from lifecycle.base.errors import LifecycleError
from lifecycle.base.refs import search_versions
from lifecycle.base.tags import MONITOR_LAST_TAG, RESTRICTED_TAG, STAGE_TAG
from lifecycle.base.workspaces import Config
from lifecycle.release.policy import ModelPolicy, ReleasePolicy

logger = logging.getLogger(__name__)


def reason_for(model: ModelPolicy, mv: Any, now: float) -> str | None:
    """Why ``model``'s ``restrict`` section restricts version ``mv`` now, or None."""
    rules = model.restrict
    tags = dict(mv.tags or {})
    reasons = []
    stage = str(getattr(mv, "current_stage", None) or tags.get(STAGE_TAG) or "None")
    if "archived" in rules.flags and (stage == "Archived" or tags.get(STAGE_TAG) == "Archived"):
        reasons.append("it is archived")
    if "drift" in rules.flags and tags.get(MONITOR_LAST_TAG):
        try:
            if json.loads(tags[MONITOR_LAST_TAG]).get("drift"):
                reasons.append("its last monitor run found drift")
        except (ValueError, AttributeError):
            pass
    if "needs_retraining" in rules.flags and tags.get("needs_retraining", "").lower() == "true":
        reasons.append("it is flagged needs_retraining")
    if rules.stale_after_s is not None:
        age = now - float(mv.creation_timestamp or 0) / 1000.0
        if age > rules.stale_after_s:
            reasons.append(f"it is stale (registered {age / 86400:.1f} days ago; "
                           f"stale_after {rules.stale_after})")  # fmt: skip
    return "; ".join(reasons) or None


def workspaces_of(model: ModelPolicy) -> list[str]:
    """The workspaces a model's policy touches: its source and every hop's target."""
    seen: list[str] = []
    for ws in (model.source, *(h.to for h in model.hops), *(j.workspace for j in model.batch)):
        if ws not in seen:
            seen.append(ws)
    return seen


def mark(policy: ReleasePolicy, config: Config, *, write: bool, now: float | None = None
         ) -> list[dict[str, Any]]:  # fmt: skip
    """The restriction changes the policy asks for (written, with audit events, when
    ``write``): ``{model, workspace, version, restricted, reason}`` per change."""
    now = time.time() if now is None else now
    changes = []
    for model in policy.models:
        if not model.restrict.flags and model.restrict.stale_after_s is None:
            continue
        for ws_name in workspaces_of(model):
            ws = config.get(ws_name)
            try:
                versions = search_versions(ws, model.name)
            except LifecycleError:
                continue
            for mv in versions:
                reason = reason_for(model, mv, now)
                current = (mv.tags or {}).get(RESTRICTED_TAG)
                old = json.loads(current).get("reason") if current else None
                if reason == old:
                    continue
                change = {"model": model.name, "workspace": ws_name, "version": str(mv.version),
                          "restricted": reason is not None, "reason": reason or old}  # fmt: skip
                changes.append(change)
                if not write:
                    continue
                client = ws.client()
                if reason is None:
                    client.delete_model_version_tag(model.name, str(mv.version), RESTRICTED_TAG)
                else:
                    value = json.dumps({"reason": reason, "release_digest": policy.digest})
                    client.set_model_version_tag(model.name, str(mv.version), RESTRICTED_TAG, value)
                record_event(
                    ws, model.name, "restrict" if reason else "unrestrict", version=str(mv.version),
                    details={"reason": reason or old, "release_file": policy.path,
                             "release_digest": policy.digest},
                )  # fmt: skip
                if reason is not None:
                    change["rolled_back"] = _roll_back_from(policy, config, model, ws_name, mv, now)
    return changes


def _roll_back_from(
    policy: ReleasePolicy, config: Config, model: ModelPolicy, ws_name: str, mv: Any, now: float
) -> list[str]:
    """Roll back each hop stage that the newly restricted ``mv`` holds in ``ws_name`` to the
    version before it, when that one is not restricted (servers following the stage swap to
    it); what was done or why not, one line each."""
    from lifecycle.base.restrict import restriction
    from lifecycle.registry.stages import current_stage, previous_holder, rollback

    ws = config.get(ws_name)
    stages = {
        h.stage for h in model.hops if h.to == ws_name and h.stage in ("Staging", "Production")
    }
    done = []
    for stage in sorted(s for s in stages if s):
        if current_stage(ws, model.name, str(mv.version)) != stage:
            continue
        prev = previous_holder(ws, model.name, stage)
        if prev is None:
            done.append(f"{stage}: no earlier version to roll back to; v{mv.version} stays")
            continue
        pmv = ws.client().get_model_version(model.name, prev)
        why = restriction(pmv.tags) or reason_for(model, pmv, now)
        if why:
            done.append(
                f"{stage}: v{prev} before it is restricted too ({why}); v{mv.version} stays"
            )
            continue
        moved = rollback(ws, model.name, stage)
        done.append(f"{stage}: rolled back to v{moved['to_version']}")
        logger.info("%s %s in '%s' rolled back to v%s", model.name, stage, ws_name, prev)
    return done
