"""Finish or undo a promotion from its journal: the one rollback of promotions.

A promotion that fails, or that is stopped by SIGTERM/SIGINT, calls :func:`undo` on its own
journal before it exits. A promotion killed outright leaves the journal behind;
``lifecycle repair`` (or a rerun of any promotion of the model) then calls :func:`repair`:

- a promotion whose copy was registered and verified, and whose undo had not begun, is
  **finished**: its stage move and audit event are done if they were not, and its run is
  ended as FINISHED;
- an earlier one is **undone**: the stage's previous holders are put back, the version and run
  it created (found by their ``lifecycle.promotion_id`` tag, even if the journal never
  recorded them) are deleted with the run's artifacts, and an empty model it created goes too.

An undo reports what it could not remove; the journal stays until nothing that can still be
removed is left, and the audit history records what was left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lifecycle.base.audit import read_history, record_event
from lifecycle.base.errors import ModelNotFoundError
from lifecycle.base.faults import fault_point
from lifecycle.base.locks import model_lock
from lifecycle.base.refs import canonical_stage, search_versions
from lifecycle.base.signals import deferred
from lifecycle.base.tags import FAILED_TAG, PROMOTION_ID_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.cleanup import (
    Left,
    discard_empty_model,
    discard_run,
    discard_version,
    short_error,
)
from lifecycle.registry.journal import Journal, describe, unfinished
from lifecycle.registry.stages import move_stage, versions_in_stage

logger = logging.getLogger(__name__)


@dataclass
class RepairOutcome:
    """What :func:`undo` or :func:`finish` did to one promotion."""

    promotion_id: str
    action: str  # "undone" | "finished"
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing that should have been removed is left."""
        return not self.left_behind

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "promotion_id": self.promotion_id,
            "action": self.action,
            "restored": self.restored,
            "removed": self.removed,
            "left_behind": self.left_behind,
            "notes": self.notes,
            "clean": self.clean,
        }


def _created_versions(journal: Journal) -> list[str]:
    ws, name, pid = journal.ws, journal.name, journal.record["id"]
    try:
        found = {
            str(v.version)
            for v in search_versions(ws, name)
            if (v.tags or {}).get(PROMOTION_ID_TAG) == pid
        }
    except Exception:
        found = set()
    registered = journal.done("register")
    if registered and registered.get("created") and registered.get("version"):
        found.add(str(registered["version"]))
    return sorted(found, key=int)


def _created_runs(journal: Journal) -> list[str]:
    ws, name, pid = journal.ws, journal.name, journal.record["id"]
    client = ws.client()
    found: set[str] = set()
    run_step = journal.done("run")
    if run_step and run_step.get("run_id"):
        found.add(str(run_step["run_id"]))
    try:
        exp = client.get_experiment_by_name(f"promoted/{name}")
        if exp is not None:
            runs = client.search_runs(
                [exp.experiment_id], filter_string=f"tags.`{PROMOTION_ID_TAG}` = '{pid}'"
            )
            found |= {r.info.run_id for r in runs}
    except Exception as exc:
        logger.warning("could not search the runs of promotion %s: %s", pid, exc)
    return sorted(found)


def undo(journal: Journal, *, record: bool = True) -> RepairOutcome:
    """Undo what the promotion of ``journal`` did in its target; close the journal if clean.

    SIGTERM/SIGINT are held while it runs (:func:`lifecycle.base.signals.deferred`).
    """
    with deferred():
        return _undo(journal, record)


def _undo(journal: Journal, record: bool) -> RepairOutcome:
    ws, name, rec = journal.ws, journal.name, journal.record
    out = RepairOutcome(rec["id"], "undone")
    try:  # once an undo has begun, a repair continues it rather than finishing the promotion
        journal.mark("undo")
    except Exception as exc:
        logger.warning("could not mark promotion %s as being undone: %s", rec["id"], exc)
    stage = str(rec.get("stage") or "None")
    before = rec.get("before") or {}
    holders = [str(v) for v in before.get("holders") or []]
    created = _created_versions(journal)
    reused = before.get("reused_version")
    # 1. the stage's previous holders back; the promoted version out of the stage.
    if stage != "None":
        try:
            fault_point("undo_restore")
            current = versions_in_stage(ws, name, stage)
            for old in reversed(holders):
                if old not in current:
                    move_stage(ws, name, old, stage, alias=None, archive=False)
                    out.restored.append(f"{name} version {old} back in {stage}")
            for version in current:
                if version not in holders:  # the promoted version leaves the stage
                    prev = "None"
                    if reused and version == str(reused):
                        prev = canonical_stage(str(before.get("reused_prev_stage") or "None"))
                    move_stage(ws, name, version, prev, alias=None, archive=False)
                    out.restored.append(f"{name} version {version} out of {stage} ({prev})")
        except ModelNotFoundError:
            pass  # nothing was created in a model that does not exist
        except Exception as exc:
            logger.exception("could not restore %s's %s holders %s", name, stage, holders)
            out.left_behind.append(
                f"{stage} of {name} not restored to version(s) {', '.join(holders) or 'none'} "
                f"({short_error(exc)})"
            )
    # 2. the version(s) and run(s) it created.
    for version in created:
        try:
            fault_point("undo_discard")
            mv_tags: dict[str, str] = {}
            for v in search_versions(ws, name):
                if str(v.version) == version:
                    mv_tags = v.tags or {}
            if ws.supports_delete is False and mv_tags.get(FAILED_TAG) == "true":
                out.notes.append(f"{name} version {version} already tagged failed and archived")
                continue
            left = discard_version(ws, name, version)
        except Exception as exc:
            left = Left(f"{name} version {version} ({short_error(exc)})")
        _account(out, left, f"{name} version {version}")
    for run_id in _created_runs(journal):
        try:
            left = discard_run(ws, run_id)
        except Exception as exc:
            left = Left(f"run {run_id} ({short_error(exc)})")
        _account(out, left, f"run {run_id} and its artifacts")
    # 3. an empty model the promotion created (its own journal goes with it).
    if not before.get("model_existed", True) and not out.left_behind:
        _account(out, discard_empty_model(ws, name), f"the empty registered model {name}")
    _close(journal, out, record)
    return out


def _account(out: RepairOutcome, left: Left | None, what: str) -> None:
    if left is None:
        out.removed.append(what)
    elif left.final:
        out.notes.append(left.text)  # the backend's rule (no deletion): nothing to retry
    else:
        out.left_behind.append(left.text)


def finish(journal: Journal, *, record: bool = True) -> RepairOutcome:
    """Complete a promotion whose copy was registered and verified: stage, run, audit."""
    with deferred():
        ws, name, rec = journal.ws, journal.name, journal.record
        out = RepairOutcome(rec["id"], "finished")
        version = str((journal.done("register") or {}).get("version") or "")
        stage = str(rec.get("stage") or "None")
        if stage != "None" and version not in versions_in_stage(ws, name, stage):
            moved = move_stage(ws, name, version, stage, alias=None, archive=True)
            out.restored.append(
                f"{name} version {version} moved to {stage}"
                + (f" (archived {', '.join(moved['archived'])})" if moved["archived"] else "")
            )
        for run_id in _created_runs(journal):
            run = ws.client().get_run(run_id)
            if str(run.info.status) == "RUNNING":
                ws.client().set_terminated(run_id, "FINISHED")
                out.notes.append(f"run {run_id} ended as FINISHED")
        audited = any(
            e.get("action") == "promote" and e.get("promotion_id") == rec["id"]
            for e in read_history(ws, name)
        )
        if not audited and record:
            src = rec.get("source") or {}
            record_event(
                ws,
                name,
                "promote",
                version=version,
                details={
                    "promotion_id": rec["id"],
                    "from_workspace": src.get("workspace"),
                    "from_version": src.get("version"),
                    "to_stage": stage,
                    "digest": src.get("digest"),
                    "created": bool((journal.done("register") or {}).get("created")),
                    "completed_by": "repair",
                },
            )
            out.notes.append("audit event recorded")
        journal.close()
        return out


def _close(journal: Journal, out: RepairOutcome, record: bool) -> None:
    if out.clean:
        journal.close()
    if not record:
        return
    try:
        record_event(
            journal.ws,
            journal.name,
            "promote_undone",
            details={k: v for k, v in out.to_dict().items() if k != "action"},
        )
    except ModelNotFoundError:
        pass  # the undo deleted the model it had created: nothing to record on
    except Exception as exc:
        logger.warning("could not record the undo of promotion %s: %s", out.promotion_id, exc)


def resolve(journal: Journal, *, record: bool = True) -> RepairOutcome:
    """Finish ``journal``'s promotion if its copy was verified, else undo it."""
    if journal.done("verify") and journal.done("register") and not journal.done("undo"):
        return finish(journal, record=record)
    return undo(journal, record=record)


def repair_unlocked(ws: Workspace, name: str, *, stray_runs: bool = True) -> list[RepairOutcome]:
    """:func:`repair` for a caller that already holds the model's lock (a promotion skips
    the search for stray runs: two round trips, and ``doctor`` finds them)."""
    outcomes = []
    for journal in unfinished(ws, name):
        logger.warning("repairing the unfinished %s", describe(journal))
        outcomes.append(resolve(journal))
    if not stray_runs:
        return outcomes
    stray = _end_stray_runs(ws, name)
    if stray.notes or stray.removed or stray.left_behind:
        outcomes.append(stray)
    return outcomes


def _end_stray_runs(ws: Workspace, name: str) -> RepairOutcome:
    """RUNNING promotion runs with no journal (the lock is held, so none is in progress):
    a run a version was registered from is ended FINISHED, any other is discarded."""
    from lifecycle.registry.doctor import running_promotion_runs

    out = RepairOutcome("", "runs")
    used = {str(v.run_id) for v in search_versions(ws, name) if v.run_id}
    for run in running_promotion_runs(ws, name):
        run_id = run.info.run_id
        if run_id in used:
            ws.client().set_terminated(run_id, "FINISHED")
            out.notes.append(f"run {run_id} ended as FINISHED (a version was registered from it)")
            continue
        _account(out, discard_run(ws, run_id), f"run {run_id} and its artifacts")
    return out


def repair(ws: Workspace, name: str) -> list[RepairOutcome]:
    """Finish or undo every unfinished promotion of ``name`` in ``ws`` (under its lock)."""
    with model_lock(ws, name, purpose="repair"):
        return repair_unlocked(ws, name)
