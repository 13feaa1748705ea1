"""``lifecycle deploy``: the group that deployment targets add their commands to."""

from __future__ import annotations

from typing import Any

from lifecycle.cli._base import cli


def plan_text(result: dict[str, Any], endpoint: str) -> str:
    """The files a deploy command wrote, and whether they were applied."""
    lines = [f"{k}: {v}" for k, v in result["files"].items()]
    applied = result.get("applied")
    lines.append(
        f"applied to endpoint {endpoint}" if applied else "(plan only; --apply creates it)"
    )
    return "\n".join(lines)


@cli.group("deploy")
def deploy() -> None:
    """Write (and with --apply, create) deployments of a registered model.

    \b
    Example:
      lifecycle deploy azure-online churn --version 3 --endpoint churn-rt --out specs/
      lifecycle deploy azure-batch churn --version 3 --endpoint churn-batch --compute cpu
    """
