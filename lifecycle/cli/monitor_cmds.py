"""``lifecycle monitor``, ``lifecycle baseline`` and ``lifecycle status``."""

from __future__ import annotations

from typing import Any

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option
from lifecycle.cli.env_cmds import env_manager_option, trust_pickle_option


def _monitor_text(r: dict[str, Any]) -> str:
    lines = [
        f"{r['model']} v{r['version']} in {r['workspace']}: "
        f"{'DRIFT' if r['drift'] else r['status']} ({r['rows']} rows, run {r['run_id']})"
    ]
    for f in r["features"]:
        psi = "-" if f["psi"] is None else f"{f['psi']:.3f}"
        mark = (
            "DRIFT"
            if f["drift"]
            else ("insufficient data" if f["status"] == "insufficient" else "")
        )
        lines.append(f"  {f['name']:<24} PSI {psi:>7}  {mark}")
    score = r.get("score")
    if score and score.get("psi") is not None:
        mark = "DRIFT" if score["drift"] else ""
        lines.append(f"  {'score (probability)':<24} PSI {score['psi']:>7.3f}  {mark}")
    for k, v in r["metrics"].items():
        change = r["metric_changes"].get(k)
        shown = int(v) if k.endswith("_rows") and float(v).is_integer() else v  # a count
        lines.append(f"  {k:<24} {shown}" + ("" if change is None else f" ({change:+.4f})"))
    for a in r["actions"]:
        detail = f" ({a['error']})" if a.get("error") else ""
        lines.append(f"  action {a['action']}: {a['status']}{detail}")
    if r["report"]:
        lines.append(f"report: {r['report']}")
    return "\n".join(lines)


@cli.command("monitor")
@env_manager_option
@trust_pickle_option
@click.argument("model_uri")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="CSV/Parquet file or folder of new data (repeatable): batch inputs, server input logs.",
)
@click.option("--labels", default=None, help="Column of the input holding true labels.")
@click.option("--report", "report_dir", default=None, help="Write an HTML report into this folder.")
@click.option(
    "--policy", default=None, help="Policy YAML (thresholds, actions); default: tag, exit 3."
)
@workspace_option
@json_option
@pass_state
def monitor_cmd(
    state: State,
    model_uri: str,
    inputs: tuple[str, ...],
    labels: str | None,
    report_dir: str | None,
    policy: str | None,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Compare new data with a model version's baseline; act on drift (exit code 3).

    Exit codes: 0 no drift, 3 drift (the policy's exit action), 4 insufficient data (no
    column had the policy's min_rows values), 1 an error.

    \b
    Example:
      lifecycle monitor models:/churn/Production -w prod --input logs/ --labels churned \\
          --report report/ --policy policy.yaml --json
    """
    from lifecycle.base.workspaces import same_workspaces_env
    from lifecycle.monitor.monitor import monitor

    # A policy's retrain action runs its project elsewhere: same workspaces there (--config).
    with same_workspaces_env(state.config):
        result = monitor(
            state.workspace_obj(workspace),
            model_uri,
            list(inputs),
            labels=labels,
            report_dir=report_dir,
            policy=policy,
        )
    emit(result.to_dict(), as_json, _monitor_text)
    result.raise_for_drift()


@cli.command("baseline")
@env_manager_option
@trust_pickle_option
@click.argument("model_uri")
@click.option(
    "--data", multiple=True, required=True, help="CSV/Parquet training or sample data (repeatable)."
)
@click.option("--labels", default=None, help="Column of the data holding true labels.")
@workspace_option
@json_option
@pass_state
def baseline_cmd(
    state: State,
    model_uri: str,
    data: tuple[str, ...],
    labels: str | None,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Store a baseline profile of sample data with a model version (for monitor).

    \b
    Example:
      lifecycle baseline models:/churn/1 -w dev --data train.csv --labels churned
    """
    from lifecycle.monitor.monitor import baseline_from_files

    result = baseline_from_files(
        state.workspace_obj(workspace), model_uri, list(data), labels=labels
    )
    emit(
        result,
        as_json,
        lambda r: (
            f"baseline of {r['model']} v{r['version']} in {r['workspace']}: "
            f"{r['rows']} rows, {len(r['features'])} features, metrics {r['metrics'] or 'none'}"
        ),
    )


def _deployment_text(d: dict[str, Any]) -> str:
    text = f"{d.get('kind')}:{d.get('target')}"
    if d.get("answering") is False:
        text += " (not answering)"
    if d.get("applied") is False:
        text += f" (specs in {d.get('specs')}, not applied)"
    return text


def _status_text(r: dict[str, Any]) -> str:
    lines = []
    for ws in r["workspaces"]:
        head = f"workspace {ws['name']} ({ws['tracking_uri']})"
        if not ws["reachable"]:
            lines.append(f"{head}: unreachable: {ws['error']}")
            continue
        lines.append(head + ("" if ws["models"] else f": {ws.get('note') or 'no models'}"))
        for m in ws["models"]:
            lines.append(f"  {m['name']}")
            for v in m["versions"]:
                deps = ", ".join(_deployment_text(d) for d in v["deployments"])
                aliases = ",".join(v["aliases"])
                last = v["monitor"]
                mon = "" if not last else f" monitor: {'DRIFT' if last.get('drift') else 'ok'}"
                lines.append(
                    f"    v{v['version']:<4} {v['stage']:<11}"
                    + (f" @{aliases}" if aliases else "")
                    + (f" deployed: {deps}" if deps else "")
                    + mon
                    + (f" flags: {','.join(v['flags'])}" if v["flags"] else "")
                )
    return "\n".join(lines)


@cli.command("status")
@workspace_option
@json_option
@pass_state
def status_cmd(state: State, workspace: str | None, as_json: bool) -> None:
    """Show each model per workspace: stages, aliases, deployments, monitoring, flags.

    \b
    Example:
      lifecycle status -w prod --json
    """
    from lifecycle.monitor.status import status

    emit(status(state.config, workspace or state.workspace), as_json, _status_text)
