"""Where each hop of a release policy stands now: its candidate version, whether the target
already holds it, and what it waits for (approval, soak, gates). Reads only."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifecycle.base.audit import read_history
from lifecycle.base.errors import GateFailedError, LifecycleError
from lifecycle.base.refs import ModelRef, resolve_model, search_versions
from lifecycle.base.tags import DIGEST_TAG, FAILED_TAG, PROMOTED_AT_TAG
from lifecycle.base.workspaces import Config, Workspace
from lifecycle.release.policy import Hop, ModelPolicy

logger = logging.getLogger(__name__)

#: What a hop's plan can say. Only ``ready`` is acted on by ``apply``.
STATES = (
    "ready",  # gates pass (or were not run), approved if needed, soaked: apply promotes it
    "up-to-date",  # the target holds this content at the hop's stage/alias
    "no-candidate",  # nothing in the hop's source (yet)
    "waiting-approval",
    "rejected",
    "soaking",
    "gates-failed",
    "manual",  # when: manual: apply does not promote it
    "restricted",  # the candidate is restricted (needs_retraining, the policy's restrict)
)


@dataclass
class HopPlan:
    """One hop, now."""

    model: str
    hop: str
    source: str
    target: str
    stage: str | None
    alias: str | None
    state: str
    detail: str
    version: str | None = None  # the candidate, numbered in the source workspace
    digest: str | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    soak_left_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def hop_source(policy: ModelPolicy, index: int) -> str:
    """The workspace hop ``index`` promotes from."""
    return policy.source if index == 0 else policy.hops[index - 1].to


def where(hop: Hop) -> str:
    parts = [p for p in (hop.stage, f"@{hop.alias}" if hop.alias else None) if p]
    return " ".join(parts)


def _live_versions(ws: Workspace, name: str) -> list[Any]:
    try:
        versions = search_versions(ws, name)
    except LifecycleError:
        return []
    return [
        v
        for v in versions
        if (v.tags or {}).get(FAILED_TAG) != "true" and str(v.current_stage) != "Archived"
    ]


def candidate(config: Config, policy: ModelPolicy, index: int) -> Any:
    """The version hop ``index`` would promote (a model version of its source), or None.

    The first hop takes the newest live version of the source; a later hop takes what the
    previous hop's stage (or alias) holds in the previous hop's workspace.
    """
    src = config.get(hop_source(policy, index))
    if index == 0:
        versions = _live_versions(src, policy.name)
        return max(versions, key=lambda v: int(v.version)) if versions else None
    prev = policy.hops[index - 1]
    ref = (
        ModelRef(name=policy.name, alias=prev.alias)
        if prev.alias
        else ModelRef(name=policy.name, stage=prev.stage)
    )
    try:
        return resolve_model(src, ref).model_version
    except LifecycleError:
        return None


def holds(ws: Workspace, name: str, hop: Hop, digest: str) -> str | None:
    """The target version with content ``digest`` when it sits at the hop's stage/alias."""
    for v in _live_versions(ws, name):
        if (v.tags or {}).get(DIGEST_TAG) != digest:
            continue
        stage_ok = hop.stage is None or hop.stage == "None" or str(v.current_stage) == hop.stage
        alias_ok = hop.alias is None or hop.alias in (getattr(v, "aliases", None) or [])
        if stage_ok and alias_ok:
            return str(v.version)
    return None


def decision(target: Workspace, name: str, hop: str, digest: str) -> dict[str, Any] | None:
    """The latest ``approve``/``reject`` event of this content for ``hop`` in the target."""
    try:
        history = read_history(target, name)
    except LifecycleError:
        return None
    found = [
        e
        for e in history
        if e.get("action") in ("approve", "reject")
        and e.get("hop") == hop
        and e.get("digest") == digest
    ]
    return found[-1] if found else None


def entered_at(policy: ModelPolicy, index: int, mv: Any) -> float:
    """When the candidate reached the hop's source: its promotion into the previous hop's
    workspace, or (first hop) its registration. Epoch seconds."""
    promoted = (mv.tags or {}).get(PROMOTED_AT_TAG) if index > 0 else None
    if promoted:
        try:
            return datetime.fromisoformat(promoted.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return float(mv.creation_timestamp or 0) / 1000.0


def plan_hop(
    config: Config,
    policy: ModelPolicy,
    index: int,
    *,
    run_gates: bool = True,
    now: float | None = None,
) -> HopPlan:
    """Where hop ``index`` of ``policy`` stands now (see :data:`STATES`)."""
    hop = policy.hops[index]
    src_name = hop_source(policy, index)
    out = HopPlan(policy.name, hop.name, src_name, hop.to, hop.stage, hop.alias, "", "")
    mv = candidate(config, policy, index)
    if mv is None:
        prev = policy.hops[index - 1] if index else None
        out.state = "no-candidate"
        out.detail = (
            f"no version of {policy.name} in '{src_name}'"
            if prev is None
            else f"nothing at {where(prev)} in '{src_name}' yet"
        )
        return out
    out.version = str(mv.version)
    digest = (mv.tags or {}).get(DIGEST_TAG)
    if not digest:
        from lifecycle.base.fetch import fetch_model

        digest = fetch_model(
            config.get(src_name),
            f"models:/{policy.name}/{mv.version}",
            None,
            in_place=True,
            digest=True,
        ).digest
    out.digest = digest
    target = config.get(hop.to)
    held = holds(target, policy.name, hop, str(digest))
    if held is not None:
        out.state = "up-to-date"
        out.detail = f"'{hop.to}' holds it as v{held} at {where(hop)}"
        return out
    from lifecycle.base.restrict import restriction

    why = restriction(mv.tags)
    if why:
        out.state, out.detail = "restricted", f"v{mv.version} in '{src_name}' is restricted: {why}"
        return out
    if hop.when == "manual":
        out.state, out.detail = "manual", "when: manual; promote it with `lifecycle promote`"
        return out
    said = decision(target, policy.name, hop.name, str(digest))
    if said is not None and said.get("action") == "reject":
        out.state = "rejected"
        out.detail = f"rejected by {said.get('approver') or said.get('by')} at {said.get('at')}: {said.get('comment') or ''}"
        return out
    if hop.soak_s:
        left = hop.soak_s - ((now or time.time()) - entered_at(policy, index, mv))
        if left > 0:
            out.state, out.soak_left_s = "soaking", round(left, 1)
            out.detail = f"soak {hop.soak}: {_human(left)} left in '{src_name}'"
            return out
    if run_gates:
        failed = _dry_run_gates(config, policy, index, out)
        if failed:
            out.state, out.detail = "gates-failed", failed
            return out
    if hop.approval == "required" and (said is None or said.get("action") != "approve"):
        out.state = "waiting-approval"
        out.detail = (
            f"approval required: lifecycle release approve {policy.name} {out.version} "
            f"--hop {hop.name}"
        )
        return out
    out.state = "ready"
    approved = f"; approved by {said.get('approver') or said.get('by')}" if said else ""
    out.detail = f"promote v{out.version} from '{src_name}' to '{hop.to}' {where(hop)}{approved}"
    return out


def _dry_run_gates(config: Config, policy: ModelPolicy, index: int, out: HopPlan) -> str | None:
    """Run the hop's gates as ``promote --dry-run`` does; the failure text or None."""
    from lifecycle.registry.promote import promote

    hop = policy.hops[index]
    kwargs = hop_promote_kwargs(hop)
    try:
        result = promote(
            config.get(out.source),
            config.get(hop.to),
            policy.name,
            version=out.version,
            dry_run=True,
            **kwargs,
        )
    except GateFailedError as exc:
        out.gates = list(exc.results)
        return str(exc)
    out.gates = [g.to_dict() for g in result.gates]
    return None


def hop_promote_kwargs(hop: Hop) -> dict[str, Any]:
    """The :func:`~lifecycle.registry.promote.promote` options a hop stands for."""
    kwargs: dict[str, Any] = {
        "target_stage": hop.stage or "None",
        "gates": list(hop.gates),
    }
    if hop.holdout is not None:
        kwargs.update(
            holdout=hop.holdout.data,
            target=hop.holdout.target,
            metric=hop.holdout.metric,
            min_delta=hop.holdout.min_delta,
        )
    return kwargs


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
