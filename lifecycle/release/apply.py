"""Planning and carrying out a release policy: ``plan`` (reads only), ``apply`` (promotes the
hops that are ready, through :func:`lifecycle.registry.promote.promote`, and records each
action with the release file's digest), and the approvals a hop with ``approval: required``
waits for."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lifecycle.base.audit import current_user, record_event
from lifecycle.base.errors import GateFailedError, InvalidArgumentError, LifecycleError
from lifecycle.base.refs import get_model_version
from lifecycle.base.tags import DIGEST_TAG
from lifecycle.base.workspaces import Config
from lifecycle.release.hops import HopPlan, hop_promote_kwargs, hop_source, plan_hop
from lifecycle.release.policy import ModelPolicy, ReleasePolicy
from lifecycle.release.restrictions import mark

logger = logging.getLogger(__name__)


@dataclass
class ReleasePlan:
    """Every hop of every model, now; and, after ``apply``, what was done."""

    file: str
    digest: str
    hops: list[HopPlan] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    restrictions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "digest": self.digest,
            "hops": [h.to_dict() for h in self.hops],
            "actions": self.actions,
            "jobs": self.jobs,
            "restrictions": self.restrictions,
        }


def plan(policy: ReleasePolicy, config: Config, *, run_gates: bool = True) -> ReleasePlan:
    """What applying ``policy`` would do now, hop by hop. Changes nothing.

    A hop after one that is not up to date is planned against what its source holds now
    (apply recomputes it after promoting the earlier hop).
    """
    out = ReleasePlan(policy.path, policy.digest)
    out.restrictions = mark(policy, config, write=False)
    for model in policy.models:
        for i in range(len(model.hops)):
            out.hops.append(plan_hop(config, model, i, run_gates=run_gates))
    return out


def apply(policy: ReleasePolicy, config: Config, *, auto_approve: bool = False) -> ReleasePlan:
    """Promote every hop that is ready, in order (a promoted hop makes the next one's
    candidate); with ``auto_approve`` a hop waiting for approval is approved first (the
    approval is recorded as such). Idempotent: with nothing new, nothing changes.

    A hop whose gates fail stays where it is (``gates-failed``) and the others go on.

    Raises:
        PromotionError: as :func:`~lifecycle.registry.promote.promote` (the actions done
            before stay done and are in the audit).
    """
    out = ReleasePlan(policy.path, policy.digest)
    # Restrictions first: a version the policy restricts is not promoted.
    out.restrictions = mark(policy, config, write=True)
    for model in policy.models:
        for i, hop in enumerate(model.hops):
            # The promotion runs the gates itself: planning them first would run them twice.
            hp = plan_hop(config, model, i, run_gates=False)
            if hp.state == "waiting-approval" and auto_approve:
                assert hp.version is not None
                decide(
                    policy,
                    config,
                    model.name,
                    hp.version,
                    hop.name,
                    approve=True,
                    comment="--auto-approve",
                )
                hp = plan_hop(config, model, i, run_gates=False)
            out.hops.append(hp)
            if hp.state != "ready":
                continue
            try:
                out.actions.append(_promote_hop(policy, config, model, i, hp))
            except GateFailedError as exc:
                hp.state, hp.detail, hp.gates = "gates-failed", str(exc), list(exc.results)
    if not out.actions and not out.restrictions:
        logger.info("nothing to do: every hop is up to date or waiting")
    return out


def _promote_hop(
    policy: ReleasePolicy, config: Config, model: ModelPolicy, index: int, hp: HopPlan
) -> dict[str, Any]:
    from lifecycle.registry.promote import promote
    from lifecycle.registry.stages import transition

    hop = model.hops[index]
    src, dst = config.get(hp.source), config.get(hop.to)
    result = promote(src, dst, model.name, version=hp.version, **hop_promote_kwargs(hop))
    assert result.version is not None
    if hop.alias:
        transition(dst, model.name, result.version, hop.stage or "None", alias=hop.alias)
    action = {
        "model": model.name,
        "hop": hop.name,
        "from": f"{hp.source} v{hp.version}",
        "to": f"{hop.to} v{result.version}",
        "stage": hop.stage,
        "alias": hop.alias,
        "created": result.created,
    }
    record_event(
        dst,
        model.name,
        "release",
        version=result.version,
        details={"release_file": policy.path, "release_digest": policy.digest, **action},
    )
    hp.state = "done"
    hp.detail = f"promoted to '{hop.to}' v{result.version}"
    return action


def decide(
    policy: ReleasePolicy,
    config: Config,
    name: str,
    version: str,
    hop_name: str,
    *,
    approve: bool,
    by: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """Record an approval (or rejection) of ``name`` v``version`` (numbered in the hop's
    source workspace) for ``hop_name``, in the target workspace's audit. It holds for that
    content (its digest), so a re-registered copy of the same files needs no new approval.

    Raises:
        ReleaseFileError: no such model or hop in the policy.
        ModelNotFoundError: no such version in the hop's source workspace.
    """
    model = policy.model(name)
    index = model.hop_index(hop_name)
    if not str(version).isdigit():
        raise InvalidArgumentError(f"Invalid version '{version}': expected a number")
    hop = model.hops[index]
    src = config.get(hop_source(model, index))
    mv = get_model_version(src, name, version)
    digest = (mv.tags or {}).get(DIGEST_TAG)
    if not digest:
        raise LifecycleError(f"{name} v{version} in '{src.name}' has no content digest tag")
    dst = config.get(hop.to)
    _ensure_model(dst, name)
    details = {
        "hop": hop.name,
        "source_workspace": src.name,
        "source_version": str(version),
        "digest": digest,
        "approver": by or current_user(),
        "comment": comment,
        "release_file": policy.path,
        "release_digest": policy.digest,
    }
    return record_event(dst, name, "approve" if approve else "reject", details=details)


def _ensure_model(ws: Any, name: str) -> None:
    """The registered model in ``ws`` (created empty when missing: its audit holds the
    approval that lets the first version in)."""
    from mlflow.exceptions import MlflowException

    try:
        ws.client().create_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
