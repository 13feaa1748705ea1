"""``lifecycle workspaces``."""

from __future__ import annotations

from lifecycle.base.workspaces import check_reachable
from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option


@cli.command("workspaces")
@workspace_option
@json_option
@pass_state
def workspaces_cmd(state: State, workspace: str | None, as_json: bool) -> None:
    """List the workspaces with their tracking and registry URIs and whether each answers.

    \b
    Example:
      lifecycle workspaces --json
    """
    config = state.config
    default = workspace or state.workspace or config.default
    if default not in config.workspaces:
        state.workspace_obj(default)  # raises: unknown workspace, naming the known ones
    rows = []
    for ws in config.workspaces.values():
        ok, reason = check_reachable(ws)
        rows.append({**ws.to_dict(), "reachable": ok, "status": reason})
    result = {
        "workspaces": [
            {k: r[k] for k in ("name", "tracking_uri", "registry_uri", "reachable")} for r in rows
        ],
        "default": default,
    }

    def text(_: object) -> str:
        lines = [f"{'':2}{'NAME':<12} {'REACHABLE':<10} TRACKING URI"]
        for r in rows:
            mark = "*" if r["name"] == default else " "
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
