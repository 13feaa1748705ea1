"""Scheduled batch jobs and monitors of a release policy: which slot is due (croniter), and
running each slot at most once, even across restarts and with two controllers.

A job's last claimed slot is a registered-model tag (``lifecycle.release.slot.<job>``) in
the job's workspace, read and written under the model's registry lock; the slot is claimed
before the job runs, so a controller killed mid-run does not run it again (at most once),
and the outcome is an audit event either way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from lifecycle.base.audit import record_event
from lifecycle.base.errors import LifecycleError
from lifecycle.base.locks import model_lock
from lifecycle.base.refs import parse_model_uri
from lifecycle.base.tags import RELEASE_SLOT_TAG_PREFIX
from lifecycle.base.workspaces import Config
from lifecycle.release.policy import BatchJob, Monitor, ReleasePolicy

logger = logging.getLogger(__name__)


@dataclass
class JobState:
    """One scheduled job, now."""

    model: str
    job: str
    kind: str  # batch | monitor
    workspace: str
    schedule: str
    slot: str  # the most recent slot (UTC, ISO)
    last: str | None  # the last slot claimed
    due: bool
    next: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def slots(schedule: str, now: float) -> tuple[datetime, datetime]:
    """The most recent slot at or before ``now`` and the next one after it (UTC)."""
    from croniter import croniter

    base = datetime.fromtimestamp(now, tz=timezone.utc)
    it = croniter(schedule, base)
    nxt = it.get_next(datetime)
    prev = croniter(schedule, nxt).get_prev(datetime)
    if prev > base:  # ``now`` is exactly on a slot boundary handled by get_prev
        prev = croniter(schedule, base).get_prev(datetime)
    return prev, nxt


def _tag(job: str) -> str:
    return f"{RELEASE_SLOT_TAG_PREFIX}{job}"


def _model_of(job: BatchJob | Monitor) -> str:
    ref = parse_model_uri(job.model)
    if ref.name is None:
        raise LifecycleError(f"Job '{job.name}': model '{job.model}' names no registered model")
    return ref.name


def _last_slot(config: Config, job: BatchJob | Monitor) -> str | None:
    ws = config.get(job.workspace)
    try:
        rm = ws.client().get_registered_model(_model_of(job))
    except Exception:
        return None
    return (getattr(rm, "tags", None) or {}).get(_tag(job.name))


def job_states(policy: ReleasePolicy, config: Config, now: float | None = None) -> list[JobState]:
    """Every scheduled job and whether its most recent slot has not run yet."""
    now = time.time() if now is None else now
    out = []
    for model in policy.models:
        jobs: list[tuple[str, BatchJob | Monitor]] = [("batch", j) for j in model.batch]
        jobs += [("monitor", m) for m in model.monitors]
        for kind, job in jobs:
            prev, nxt = slots(job.schedule, now)
            last = _last_slot(config, job)
            out.append(
                JobState(
                    model.name,
                    job.name,
                    kind,
                    job.workspace,
                    job.schedule,
                    _iso(prev),
                    last,
                    last != _iso(prev),
                    _iso(nxt),
                )
            )
    return out


def claim(config: Config, job: BatchJob | Monitor, slot: str) -> bool:
    """Claim ``slot`` for ``job`` under the model's lock; False when it was claimed already."""
    ws = config.get(job.workspace)
    name = _model_of(job)
    with model_lock(ws, name, purpose=f"release job {job.name}"):
        if _last_slot(config, job) == slot:
            return False
        ws.client().set_registered_model_tag(name, _tag(job.name), slot)
    return True


def output_for(template: str, slot: str) -> str:
    """``template`` with ``{date}`` (2026-12-02), ``{time}`` (0200) and ``{slot}``
    (20261202T0200Z) of the slot."""
    dt = datetime.strptime(slot, "%Y-%m-%dT%H:%M:%SZ")
    return template.format(
        date=dt.strftime("%Y-%m-%d"), time=dt.strftime("%H%M"), slot=dt.strftime("%Y%m%dT%H%MZ")
    )


def run_due(
    policy: ReleasePolicy, config: Config, now: float | None = None
) -> list[dict[str, Any]]:
    """Run every job whose most recent slot has not been claimed; what each did."""
    done = []
    for state in job_states(policy, config, now):
        if not state.due:
            continue
        model = policy.model(state.model)
        candidates: list[BatchJob | Monitor] = [*model.batch, *model.monitors]
        job = next(j for j in candidates if j.name == state.job)
        if not claim(config, job, state.slot):
            logger.info("slot %s of %s was run by another controller", state.slot, job.name)
            continue
        done.append(_run_job(policy, config, state, job))
    return done


def _run_job(
    policy: ReleasePolicy, config: Config, state: JobState, job: BatchJob | Monitor
) -> dict[str, Any]:
    ws = config.get(job.workspace)
    outcome: dict[str, Any] = {"job": job.name, "kind": state.kind, "slot": state.slot}
    try:
        if isinstance(job, BatchJob):
            from batch.engine import score

            out = output_for(job.output, state.slot)
            manifest = score(ws, job.model, job.input, out, **job.options)
            outcome.update(
                ok=True,
                output=out,
                rows_scored=manifest.rows_scored,
                rows_rejected=manifest.rows_rejected,
                version=manifest.model_version,
            )
        else:
            import glob

            from lifecycle.monitor.monitor import monitor

            files = sorted(glob.glob(job.input)) or [job.input]
            from lifecycle.base.workspaces import same_workspaces_env

            with same_workspaces_env(config):  # a retrain action names these workspaces
                result = monitor(ws, job.model, files, policy=job.policy)
            outcome.update(ok=True, drift=bool(getattr(result, "drift", False)))
    except LifecycleError as exc:
        outcome.update(ok=False, error=str(exc))
        logger.warning("job %s, slot %s failed: %s", job.name, state.slot, exc)
    record_event(
        ws,
        _model_of(job),
        "release-job",
        details={**outcome, "release_file": policy.path, "release_digest": policy.digest},
    )
    return outcome
