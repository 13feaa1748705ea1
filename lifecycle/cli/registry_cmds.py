"""``lifecycle transition | promote | rollback | history | lineage``: the registry lifecycle."""

from __future__ import annotations

import sys
from typing import Any

import click

from lifecycle.base.errors import GateFailedError
from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option
from lifecycle.cli.env_cmds import env_manager_option
from lifecycle.cli.trust_cmds import repair_line

_BAR_MIN_BYTES = 10 * 1024 * 1024


def gate_table(gates: list[dict[str, Any]]) -> str:
    """The gates as a text table: gate, value, threshold, result, detail."""
    rows = [("GATE", "VALUE", "THRESHOLD", "RESULT", "DETAIL")]
    for g in gates:
        value = g.get("value")
        shown = (
            f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))
        )
        result = {True: "pass", False: "FAIL", None: "skipped"}[g.get("passed")]
        rows.append((str(g["gate"]), shown, str(g["threshold"]), result, str(g.get("detail", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )


class _Bars:
    """Byte progress bars on stderr, only on a terminal and only for large transfers."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}
        self.done: dict[str, int] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if total < _BAR_MIN_BYTES or not sys.stderr.isatty():
            return
        bar = self.bars.get(phase)
        if bar is None:
            bar = click.progressbar(length=total, label=f"{phase:<8}", file=sys.stderr)
            bar.__enter__()
            self.bars[phase], self.done[phase] = bar, 0
        bar.update(done - self.done[phase])
        self.done[phase] = done
        if done >= total:
            bar.__exit__(None, None, None)

    def close(self) -> None:
        for phase, bar in self.bars.items():
            if self.done.get(phase, 0) < bar.length:
                bar.__exit__(None, None, None)


@cli.command("transition")
@click.argument("name")
@click.argument("version")
@click.argument("stage")
@click.option("--alias", default=None, help="Also point this free-form alias at the version.")
@click.option(
    "--no-archive", is_flag=True, help="Keep the versions that held the stage (no archiving)."
)
@workspace_option
@json_option
@pass_state
def transition_cmd(
    state: State,
    name: str,
    version: str,
    stage: str,
    alias: str | None,
    no_archive: bool,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Move a version to a stage (None, Staging, Production, Archived; any case).

    The stage is mirrored as an alias (staging, production), so models:/NAME/Production and
    models:/NAME@production resolve to the same version. Moving to Production archives the
    previous Production version unless --no-archive.

    \b
    Example:
      lifecycle transition churn 3 production -w prod --alias champion
    """
    from lifecycle.registry.stages import transition

    ws = state.workspace_obj(workspace)
    result = transition(ws, name, version, stage, alias=alias, archive_existing=not no_archive)
    emit(
        result,
        as_json,
        lambda r: (
            f"{r['name']} version {r['version']}: {r['from_stage']} -> {r['to_stage']}"
            + (f" (archived {', '.join(r['archived'])})" if r["archived"] else "")
            + (f" alias {r['alias']}" if r["alias"] else "")
        ),
    )


@cli.command("promote")
@env_manager_option
@click.argument("name")
@click.option("--version", default=None, help="Source version number.")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    help="With --version/--alias: the target stage (default Production). Without them: the "
    "first --stage selects the source version, a second one is the target stage.",
)
@click.option("--alias", default=None, help="Source alias (e.g. champion).")
@click.option("--from", "from_ws", required=True, help="Source workspace.")
@click.option("--to", "to_ws", required=True, help="Target workspace.")
@click.option("--gate", "gates", multiple=True, help="Metric threshold, e.g. accuracy>=0.9.")
@click.option("--holdout", type=click.Path(dir_okay=False), help="Labelled CSV to compare on.")
@click.option("--target", default=None, help="Label column of the holdout CSV.")
@click.option("--metric", default=None, help="Holdout metric (default accuracy / rmse).")
@click.option("--min-delta", type=float, default=0.0, help="How much worse the candidate may be.")
@click.option("--dry-run", is_flag=True, help="Run the gates and show the plan; write nothing.")
@click.option("--force", is_flag=True, help="Make a new version even if the same one exists.")
@click.option("--no-smoke", is_flag=True, help="Skip the fresh-process smoke test gate.")
@json_option
@pass_state
def promote_cmd(
    state: State,
    name: str,
    version: str | None,
    stages: tuple[str, ...],
    alias: str | None,
    from_ws: str,
    to_ws: str,
    gates: tuple[str, ...],
    holdout: str | None,
    target: str | None,
    metric: str | None,
    min_delta: float,
    dry_run: bool,
    force: bool,
    no_smoke: bool,
    as_json: bool,
) -> None:
    """Copy a version into another workspace after its gates pass, and stage it there.

    Prints the new version in the target and a table of the gates. A failing gate exits 1
    and leaves the target untouched.

    \b
    Example:
      lifecycle promote churn --version 3 --from dev --to prod --stage Production \\
          --gate "accuracy>=0.9" --holdout holdout.csv --target label
      lifecycle promote churn --stage Staging --from test --to prod --dry-run
    """
    from lifecycle.registry.promote import promote

    source_stage, target_stage = _split_stages(stages, selected=bool(version or alias))
    bars = _Bars()
    try:
        result = promote(
            state.workspace_obj(from_ws),
            state.workspace_obj(to_ws),
            name,
            version=version,
            stage=source_stage,
            alias=alias,
            target_stage=target_stage,
            gates=gates,
            holdout=holdout,
            target=target,
            metric=metric,
            min_delta=min_delta,
            dry_run=dry_run,
            force=force,
            smoke=not no_smoke,
            progress=bars,
        )
    except GateFailedError as exc:
        failed = getattr(exc, "result", None)
        if as_json and failed is not None:
            emit(failed.to_dict(), True)
        else:
            click.echo(gate_table(exc.results))
        raise
    finally:
        bars.close()

    def text(r: dict[str, Any]) -> str:
        tgt = r["target"]
        if r["dry_run"]:
            head = "Dry run: would " + "; then ".join(r["plan"])
        else:
            reused = "" if tgt["created"] else " (existing version reused)"
            head = f"{r['name']} version {tgt['version']} in {tgt['workspace']}{reused}"
            if tgt["stage"]:
                head += f": {tgt['stage']}"
            if tgt["archived"]:
                head += f" (archived {', '.join(tgt['archived'])})"
        src = r["source"]
        lines = [head, f"from {src['workspace']} {src['name']} version {src['version']}"]
        for rep in r.get("repaired") or []:
            lines.append(f"first {repair_line(rep)}")
        if r["gates"]:
            lines.append(gate_table(r["gates"]))
        return "\n".join(lines)

    emit(result.to_dict(), as_json, text)


def _split_stages(stages: tuple[str, ...], *, selected: bool) -> tuple[str | None, str]:
    if selected:
        if len(stages) > 1:
            raise click.UsageError("with --version or --alias, give --stage at most once")
        return None, stages[0] if stages else "Production"
    if not stages:
        raise click.UsageError("select the source with --version, --stage or --alias")
    if len(stages) > 2:
        raise click.UsageError("--stage at most twice: source stage, then target stage")
    return stages[0], stages[1] if len(stages) == 2 else "Production"


@cli.command("rollback")
@click.argument("name")
@click.option("--stage", default="Production", show_default=True, help="Stage to roll back.")
@workspace_option
@json_option
@pass_state
def rollback_cmd(state: State, name: str, stage: str, workspace: str | None, as_json: bool) -> None:
    """Put the previous version of a stage back and archive the current one.

    \b
    Example:
      lifecycle rollback churn -w prod --stage Production
    """
    from lifecycle.registry.stages import rollback

    result = rollback(state.workspace_obj(workspace), name, stage)
    emit(
        result,
        as_json,
        lambda r: (
            f"{r['name']} {r['stage']}: version {r['from_version']} -> version "
            f"{r['to_version']} (archived {', '.join(r['archived']) or 'none'})"
        ),
    )


@cli.command("history")
@click.argument("name")
@workspace_option
@json_option
@pass_state
def history_cmd(state: State, name: str, workspace: str | None, as_json: bool) -> None:
    """Show the audit history of a model: transitions, promotions, rollbacks, gates,
    deployments (serving, batch, Azure specs) and monitoring results (drift or not).

    \b
    Example:
      lifecycle history churn -w prod --json
    """
    from lifecycle.base.audit import read_history

    events = read_history(state.workspace_obj(workspace), name)

    def text(evs: list[dict[str, Any]]) -> str:
        if not evs:
            return f"No recorded events for {name}"
        lines = []
        for e in evs:
            move = ""
            action = e.get("action")
            if e.get("to_stage"):
                before = e.get("from_stage")
                move = f"{before} -> {e['to_stage']}" if before else f"-> {e['to_stage']}"
                if before == e["to_stage"]:  # an alias moved; the stage stayed
                    move = f"stays {before}"
            if e.get("alias"):
                move = f"{move} @{e['alias']}".strip()
            if action == "rollback" and e.get("from_version"):
                move = f"{move} (rolled back from v{e['from_version']})".strip()
            elif e.get("from_version"):
                source = f"{e['from_workspace']} " if e.get("from_workspace") else ""
                move = f"from {source}v{e['from_version']} {move}".strip()
            if action == "deploy":
                move = f"{e.get('kind', '?')} at {e.get('target', '?')}"
            elif action == "monitor":
                drifted = e.get("drifted_features") or []
                move = (
                    f"drift found ({', '.join(drifted[:5]) or 'metrics'})"
                    if e.get("drift")
                    else "no drift"
                ) + (f" on {e['rows']} rows" if e.get("rows") is not None else "")
            elif action in ("approve", "reject"):
                note = f": {e['comment']}" if e.get("comment") else ""
                move = (
                    f"hop {e.get('hop')}: {e.get('source_workspace')} v{e.get('source_version')} "
                    f"by {e.get('approver')}{note}"
                )
            elif action == "release":
                move = (
                    f"hop {e.get('hop')}: {e.get('from')} -> {e.get('to')} "
                    f"({e.get('release_file')} {str(e.get('release_digest', ''))[:12]})"
                )
            elif action == "release-job":
                outcome = "ok" if e.get("ok") else f"FAILED: {e.get('error')}"
                move = f"{e.get('kind')} {e.get('job')} slot {e.get('slot')}: {outcome}"
            elif action in ("restrict", "unrestrict", "allow-restricted"):
                used = f"{e['command']} despite: " if e.get("command") else ""
                move = f"{used}{e.get('reason')}"
            elif action == "promote_undone":
                left = e.get("left_behind") or []
                move = f"promotion {e.get('promotion_id', '?')} undone" + (
                    f"; LEFT BEHIND: {'; '.join(left)}" if left else ""
                )
            gates = e.get("gates") or []
            if gates:
                ok = sum(1 for g in gates if g.get("passed"))
                move += f" gates {ok}/{len(gates)} passed"
            lines.append(
                f"{e.get('at', '')[:19]}  {e.get('by', ''):<10} {e.get('action', ''):<10} "
                f"v{e.get('version') or '-':<4} {move}".rstrip()
            )
        return "\n".join(lines)

    emit(events, as_json, text)


@cli.command("lineage")
@click.argument("name")
@click.argument("version")
@workspace_option
@json_option
@pass_state
def lineage_cmd(
    state: State, name: str, version: str, workspace: str | None, as_json: bool
) -> None:
    """Follow a version back through every promotion to where it was first registered.

    \b
    Example:
      lifecycle lineage churn 2 -w prod
    """
    from lifecycle.registry.lineage import lineage

    chain = lineage(state.config, state.workspace_obj(workspace), name, version)

    def text(hops: list[dict[str, Any]]) -> str:
        lines = []
        for i, h in enumerate(hops):
            prefix = "  " * i + ("<- " if i else "")
            where = f"{h.get('workspace')} {h.get('name')} version {h.get('version')}"
            if not h.get("reachable", True):
                lines.append(f"{prefix}{where} (unreachable: {h.get('reason')})")
                continue
            info = f" [{h.get('stage')}]"
            if h.get("promoted_at"):
                info += f" promoted {h['promoted_at'][:19]} by {h.get('promoted_by')}"
            lines.append(f"{prefix}{where}{info}")
        return "\n".join(lines)

    emit(chain, as_json, text)
