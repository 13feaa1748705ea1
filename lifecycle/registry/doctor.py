"""``lifecycle doctor``: check the registry invariants the toolkit promises, and say how to
repair each violation.

For every registered model of a workspace (or one):

- ``two-holders``: at most one version holds Staging, and one Production;
- ``alias-split``: each stage alias (``@staging``, ``@production``) points at its stage's
  holder, and the holder's ``lifecycle.stage`` tag agrees;
- ``duplicate-digest``: no two live (not archived, not failed) versions share a content digest;
- ``running-run``: no run of a promotion that is not in progress is still RUNNING;
- ``unfinished-promotion``: no promotion journal is left;
- ``unaudited-stage``: every version holding Staging or Production has an audit event that put
  it there.

Each violation carries the one command that repairs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lifecycle.base.audit import read_history
from lifecycle.base.refs import STAGE_ALIASES, search_versions
from lifecycle.base.tags import DIGEST_TAG, FAILED_TAG, PROMOTION_ID_TAG, STAGE_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.journal import describe, quote_name, repair_command, unfinished
from lifecycle.registry.stages import aliases_of, capabilities

logger = logging.getLogger(__name__)

#: Audit actions that put a version into a stage.
_ENTERING = ("transition", "promote", "rollback", "repair")


@dataclass
class Violation:
    """One broken invariant and the command that repairs it."""

    workspace: str
    model: str
    check: str
    detail: str
    repair: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly description."""
        return {
            "workspace": self.workspace,
            "model": self.model,
            "check": self.check,
            "detail": self.detail,
            "repair": self.repair,
        }


def model_names(ws: Workspace) -> list[str]:
    """Every registered model of ``ws``."""
    client = ws.client()
    names: list[str] = []
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names += [str(m.name) for m in page]
        token = getattr(page, "token", None)
        if not token:
            return sorted(names)


def check_model(ws: Workspace, name: str) -> list[Violation]:
    """The violations of model ``name`` in ``ws`` (empty when it is healthy)."""
    found: list[Violation] = []

    def add(check: str, detail: str, repair: str) -> None:
        found.append(Violation(ws.name, name, check, detail, repair))

    journals = unfinished(ws, name)
    in_progress = {j.record["id"] for j in journals}
    for journal in journals:
        add("unfinished-promotion", describe(journal), repair_command(ws, name))
    versions = {str(v.version): v for v in search_versions(ws, name)}
    stages_on = capabilities(ws)["stages"]
    aliases = aliases_of(ws, name)
    history = read_history(ws, name)
    for stage, alias in STAGE_ALIASES.items():
        by_stage = sorted(
            (
                v
                for v, mv in versions.items()
                if (
                    str(getattr(mv, "current_stage", "")) == stage
                    if stages_on
                    else (mv.tags or {}).get(STAGE_TAG) == stage
                )
            ),
            key=int,
        )
        pointed = aliases.get(alias)
        if len(by_stage) > 1:
            keep = pointed if pointed in by_stage else by_stage[-1]
            add(
                "two-holders",
                f"versions {', '.join(by_stage)} are all in {stage}",
                f"lifecycle transition {quote_name(name)} {keep} {stage} -w {ws.name}",
            )
        holder = by_stage[-1] if by_stage else None
        if capabilities(ws)["aliases"] and stages_on and pointed != holder:
            if holder is not None:
                fix = f"lifecycle transition {quote_name(name)} {holder} {stage} -w {ws.name}"
            else:
                fix = f"lifecycle transition {quote_name(name)} {pointed} {stage} -w {ws.name}"
            add(
                "alias-split",
                f"@{alias} -> {pointed or 'nothing'} but {stage} is held by {holder or 'nothing'}",
                fix,
            )
        for v in by_stage:
            tag = (versions[v].tags or {}).get(STAGE_TAG)
            if stages_on and tag not in (None, stage):
                add(
                    "alias-split",
                    f"version {v} is in {stage} but its {STAGE_TAG} tag says {tag}",
                    f"lifecycle transition {quote_name(name)} {v} {stage} -w {ws.name}",
                )
            entered = any(
                e.get("action") in _ENTERING
                and str(e.get("version")) == v
                and e.get("to_stage") == stage
                for e in history
            )
            if not entered:
                add(
                    "unaudited-stage",
                    f"version {v} holds {stage} but no audit event put it there",
                    f"lifecycle transition {quote_name(name)} {v} {stage} -w {ws.name}",
                )
    by_digest: dict[str, list[str]] = {}
    for v, mv in versions.items():
        tags = mv.tags or {}
        stage = str(getattr(mv, "current_stage", "") or tags.get(STAGE_TAG) or "None")
        if tags.get(DIGEST_TAG) and tags.get(FAILED_TAG) != "true" and stage != "Archived":
            by_digest.setdefault(tags[DIGEST_TAG], []).append(v)
    for digest, same in by_digest.items():
        if len(same) > 1:
            same.sort(key=int)
            unstaged = [
                v for v in same if str(getattr(versions[v], "current_stage", "")) in ("None", "")
            ]
            extra = unstaged[-1] if unstaged else same[-1]
            add(
                "duplicate-digest",
                f"versions {', '.join(same)} hold the same content ({digest[:12]}…)",
                f"lifecycle transition {quote_name(name)} {extra} Archived -w {ws.name}",
            )
    for run in running_promotion_runs(ws, name):
        pid = (run.data.tags or {}).get(PROMOTION_ID_TAG)
        if pid not in in_progress:
            add(
                "running-run",
                f"run {run.info.run_id} of promotion {pid or '(no id)'} is still RUNNING",
                repair_command(ws, name),
            )
    return found


def running_promotion_runs(ws: Workspace, name: str) -> list[Any]:
    """RUNNING runs in the experiment ``promoted/<name>``."""
    client = ws.client()
    exp = client.get_experiment_by_name(f"promoted/{name}")
    if exp is None:
        return []
    return list(
        client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    )


def check(ws: Workspace, name: str | None = None) -> list[Violation]:
    """The violations of one model, or of every model in ``ws``."""
    names = [name] if name else model_names(ws)
    found: list[Violation] = []
    for n in names:
        found += check_model(ws, n)
    logger.info("doctor: %d model(s) in '%s', %d violation(s)", len(names), ws.name, len(found))
    return found
