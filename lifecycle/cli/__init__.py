"""The ``lifecycle`` command line. Each submodule adds the commands of one area.

Only this package prints; everything it calls logs.
"""

from __future__ import annotations

# Importing a command module registers its commands on the group.
from lifecycle.cli import batch_cmds, deploy_cmds, registry_cmds, workspace_cmds, serve_cmds  # noqa: F401
from lifecycle.cli import monitor_cmds  # noqa: F401
from lifecycle.cli import import_cmds  # noqa: F401
from lifecycle.cli import demo_cmds  # noqa: F401
from lifecycle.cli._base import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point of the ``lifecycle`` console script."""
    cli(prog_name="lifecycle")
