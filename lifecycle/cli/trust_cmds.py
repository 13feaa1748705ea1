"""``lifecycle doctor | repair | trust``: check the registry's invariants; finish or undo a
killed promotion; record the consent to unpickle a version."""

from __future__ import annotations

from typing import Any

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option


def repair_line(outcome: dict[str, Any]) -> str:
    """One line for what a repair did to one promotion (or to stray runs)."""
    if outcome["action"] == "runs":
        head = "ended stray promotion runs"
    else:
        head = f"{outcome['action']} the unfinished promotion {outcome['promotion_id']}"
    parts = outcome["restored"] + [f"removed {x}" for x in outcome["removed"]] + outcome["notes"]
    line = head + (f": {'; '.join(parts)}" if parts else "")
    if outcome["left_behind"]:
        line += f"; LEFT BEHIND: {'; '.join(outcome['left_behind'])}"
    return line


@cli.command("doctor")
@click.argument("name", required=False)
@workspace_option
@json_option
@pass_state
def doctor_cmd(state: State, name: str | None, workspace: str | None, as_json: bool) -> None:
    """Check the registry's invariants for one model or every model of a workspace.

    One holder per stage, stage aliases on their stage's holder, no two live versions with
    one content digest, no RUNNING runs of finished promotions, no unfinished promotion
    journals, an audit event for every staged version. Exits 1 listing each violation with
    the command that repairs it; exits 0 (printing "ok") when there is none.

    \b
    Example:
      lifecycle doctor -w prod
      lifecycle doctor churn -w prod --json
    """
    from lifecycle.registry.doctor import check

    ws = state.workspace_obj(workspace)
    found = [v.to_dict() for v in check(ws, name)]
    what = f"model '{name}'" if name else "every model"

    def text(items: list[dict[str, str]]) -> str:
        if not items:
            return f"ok: {what} in workspace '{ws.name}' holds every invariant"
        lines = [f"{len(items)} violation(s) in workspace '{ws.name}':"]
        for v in items:
            lines.append(f"  {v['model']}: {v['check']}: {v['detail']}")
            lines.append(f"    repair: {v['repair']}")
        return "\n".join(lines)

    emit(found, as_json, text)
    if found:
        raise SystemExit(1)


@cli.command("repair")
@click.argument("name")
@workspace_option
@json_option
@pass_state
def repair_cmd(state: State, name: str, workspace: str | None, as_json: bool) -> None:
    """Finish or undo a promotion that was killed before it completed.

    A promotion whose copy was registered and verified is finished (stage move, audit event);
    an earlier one is undone (previous stage holders back, the version and run it created
    deleted with the run's artifacts). Promotion runs left RUNNING are ended too. Exits 1 if
    something could not be removed, naming it.

    \b
    Example:
      lifecycle repair churn -w prod
    """
    from lifecycle.registry.repair import repair

    ws = state.workspace_obj(workspace)
    outcomes = [o.to_dict() for o in repair(ws, name)]

    def text(items: list[dict[str, Any]]) -> str:
        if not items:
            return f"nothing to repair: {name} in '{ws.name}' has no unfinished promotion"
        return "\n".join(repair_line(o) for o in items)

    emit(outcomes, as_json, text)
    if any(o["left_behind"] for o in outcomes):
        raise SystemExit(1)


@cli.command("trust")
@click.argument("name")
@click.argument("version")
@click.option("--revoke", is_flag=True, help="Remove the recorded consent instead.")
@workspace_option
@json_option
@pass_state
def trust_cmd(
    state: State, name: str, version: str, revoke: bool, workspace: str | None, as_json: bool
) -> None:
    """Record your consent to unpickle version VERSION of NAME (or --revoke it).

    Loading a pickled model runs code from its files. The toolkit loads a registered version
    that needs unpickling (serve, score, monitor, gates, promote, Azure specs) only when
    consent is recorded on it: by `import --trust-pickle`, by this command, or carried by a
    promotion of the same bytes. Both changes are audit events (see `lifecycle history`).
    A server started before a revocation keeps its loaded model; its warm-start cache on
    this machine is not cleared.

    \b
    Example:
      lifecycle trust churn 3 -w dev
      lifecycle trust churn 3 -w dev --revoke
    """
    from lifecycle.registry.versions import set_consent

    ws = state.workspace_obj(workspace)
    out = set_consent(ws, name, version, revoke=revoke)

    def text(d: dict[str, Any]) -> str:
        where = f"{d['name']} v{d['version']} in '{d['workspace']}'"
        if revoke:
            if d["changed"]:
                return f"revoked the consent to unpickle {where}"
            return f"no consent was recorded on {where}"
        if d["changed"]:
            return f"recorded your consent to unpickle {where}"
        return f"consent to unpickle {where} was already recorded: {d['consent']}"

    emit(out, as_json, text)
