"""``lifecycle deploy``: the group that deployment targets add their commands to."""

from __future__ import annotations

from lifecycle.cli._base import cli


@cli.group("deploy")
def deploy() -> None:
    """Write (and with --apply, create) deployments of a registered model.

    \b
    Example:
      lifecycle deploy azure-online churn --version 3 --endpoint churn-rt --out specs/
      lifecycle deploy azure-batch churn --version 3 --endpoint churn-batch --compute cpu
    """
