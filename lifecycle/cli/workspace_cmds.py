"""``lifecycle workspaces``."""

from __future__ import annotations

from lifecycle.base.workspaces import check_reachable
from lifecycle.cli._base import State, cli, emit, json_option, pass_state


@cli.command("workspaces")
@json_option
@pass_state
def workspaces_cmd(state: State, as_json: bool) -> None:
    """List the workspaces with their tracking and registry URIs and whether each answers.

    \b
    Example:
      lifecycle workspaces --json
    """
    config = state.config
    rows = []
    for ws in config.workspaces.values():
        ok, reason = check_reachable(ws)
        rows.append({**ws.to_dict(), "reachable": ok, "status": reason})
    result = {
        "workspaces": [
            {k: r[k] for k in ("name", "tracking_uri", "registry_uri", "reachable")} for r in rows
        ],
        "default": config.default,
    }

    def text(_: object) -> str:
        lines = [f"{'':2}{'NAME':<12} {'REACHABLE':<10} TRACKING URI"]
        for r in rows:
            mark = "*" if r["name"] == config.default else " "
            status = "yes" if r["reachable"] else "no"
            lines.append(f"{mark:2}{r['name']:<12} {status:<10} {r['tracking_uri']}")
            if r["registry_uri"] != r["tracking_uri"]:
                lines.append(f"{'':25}registry: {r['registry_uri']}")
            if not r["reachable"]:
                lines.append(f"{'':25}({r['status']})")
        src = f"from {config.path}" if config.path else "embedded default"
        lines.append(f"(* default; {src})")
        return "\n".join(lines)

    emit(result, as_json, text)
