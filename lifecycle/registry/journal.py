"""The promotion journal: an intent record in the target registry before its first write.

A promotion writes a registered-model tag ``lifecycle.journal.<promotion id>`` in the target
before it creates anything there. The record names the source, the target stage, the steps
planned, and what the target looked like before (the stage's holders, whether the model
existed, a reused version's stage); the step that decides between finishing and undoing
(the copy registered and verified) adds itself to ``done``; the others are found by their
traces (the run and version carry the promotion id, the holders and the audit are read), so
that a promotion pays for three journal writes in all. The
tag is deleted when the promotion finishes or is undone, so a journal that is still there
(and whose model lock nobody holds) is the trace of a promotion that was killed.

Every other registry write on the model checks for one first (:func:`require_none`) and
stops with the exact repair command; :mod:`lifecycle.registry.repair` finishes or undoes it.
"""

from __future__ import annotations

import json
import logging
import secrets
import shlex
from typing import Any

from lifecycle.base.audit import utcnow
from lifecycle.base.errors import LifecycleError
from lifecycle.base.lease import owner_name
from lifecycle.base.tags import JOURNAL_TAG_PREFIX
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

#: The steps of a promotion's write phase, in order.
STEPS = ("run", "register", "verify", "stage", "audit")


class UnfinishedPromotionError(LifecycleError):
    """A killed promotion left its journal; the model must be repaired first."""

    error_code = "INVALID_STATE"
    http_status = 409


def new_promotion_id() -> str:
    """A fresh promotion id (UTC time and random, sortable)."""
    return utcnow()[:19].replace("-", "").replace(":", "") + "-" + secrets.token_hex(4)


def quote_name(name: str) -> str:
    """``name`` as it must be typed in a shell command."""
    return shlex.quote(name)


def repair_command(ws: Workspace, name: str) -> str:
    """The command that repairs ``name`` in ``ws``."""
    return f"lifecycle repair {quote_name(name)} -w {ws.name}"


class Journal:
    """The journal of one promotion into ``ws``."""

    def __init__(self, ws: Workspace, name: str, record: dict[str, Any]) -> None:
        self.ws = ws
        self.name = name
        self.record = record

    @property
    def key(self) -> str:
        """The registered-model tag that holds it."""
        return f"{JOURNAL_TAG_PREFIX}{self.record['id']}"

    @classmethod
    def start(
        cls,
        ws: Workspace,
        name: str,
        promotion_id: str,
        *,
        source: dict[str, Any],
        stage: str,
        before: dict[str, Any],
        planned: list[str],
    ) -> Journal:
        """Write the intent record (the model must exist to hold it)."""
        record = {
            "id": promotion_id,
            "owner": owner_name(),
            "started": utcnow(),
            "source": source,
            "stage": stage,
            "planned": planned,
            "before": before,
            "done": {},
        }
        journal = cls(ws, name, record)
        journal._write()
        return journal

    def _write(self) -> None:
        value = json.dumps(self.record, sort_keys=True, default=str)
        self.ws.client().set_registered_model_tag(self.name, self.key, value)

    def mark(self, *steps: str, **facts: Any) -> None:
        """Record, in one write, that ``steps`` completed (with the facts an undo or finish
        needs)."""
        for step in steps:
            self.record["done"][step] = {"at": utcnow(), **facts}
        self._write()
        logger.debug("promotion %s: step(s) %s done", self.record["id"], ", ".join(steps))

    def done(self, step: str) -> dict[str, Any] | None:
        """The facts of a completed step, None if it did not complete."""
        found = self.record["done"].get(step)
        return found if isinstance(found, dict) else None

    def close(self) -> None:
        """Delete the journal (the promotion finished or was undone)."""
        try:
            self.ws.client().delete_registered_model_tag(self.name, self.key)
        except Exception as exc:  # the model itself was deleted by the undo
            logger.debug("journal %s of %s not deleted: %s", self.key, self.name, exc)


def unfinished(ws: Workspace, name: str) -> list[Journal]:
    """The journals left on ``name`` in ``ws``, oldest first (none when the model is absent)."""
    from lifecycle.base.errors import ModelNotFoundError
    from lifecycle.base.refs import get_registered_model

    try:
        tags = get_registered_model(ws, name).tags or {}
    except ModelNotFoundError:
        return []
    found = []
    for key in sorted(k for k in tags if k.startswith(JOURNAL_TAG_PREFIX)):
        try:
            record = json.loads(tags[key])
        except json.JSONDecodeError:
            record = {"id": key[len(JOURNAL_TAG_PREFIX) :], "unreadable": tags[key], "done": {}}
        record.setdefault("id", key[len(JOURNAL_TAG_PREFIX) :])
        record.setdefault("done", {})
        found.append(Journal(ws, name, record))
    return found


def describe(journal: Journal) -> str:
    """One line: which promotion, by whom, and the last step it completed."""
    rec = journal.record
    steps = [s for s in STEPS if s in rec.get("done", {})]
    src = rec.get("source") or {}
    return (
        f"promotion {rec['id']} of {journal.name} v{src.get('version', '?')} from "
        f"'{src.get('workspace', '?')}' by {rec.get('owner', '?')}, started {rec.get('started', '?')}, "
        f"copy verified: {'yes' if 'verify' in steps else 'no'}"
        + (", being undone" if "undo" in rec.get("done", {}) else "")
    )


def require_none(ws: Workspace, name: str) -> None:
    """Raise if a killed promotion left a journal on ``name`` (call it under the model lock).

    Raises:
        UnfinishedPromotionError: naming the promotion and the repair command.
    """
    left = unfinished(ws, name)
    if left:
        raise UnfinishedPromotionError(
            f"Model '{name}' in workspace '{ws.name}' has an unfinished {describe(left[0])}; "
            f"run: {repair_command(ws, name)}"
        )
