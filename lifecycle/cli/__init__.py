"""The ``lifecycle`` command line. Each submodule adds the commands of one area.

Only this package prints; everything it calls logs.
"""

from __future__ import annotations

# Importing a command module registers its commands on the group.
from lifecycle.cli import (  # noqa: F401
    batch_cmds,
    demo_cmds,
    deploy_cmds,
    import_cmds,
    monitor_cmds,
    registry_cmds,
    serve_cmds,
    workspace_cmds,
)
from lifecycle.cli._base import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point of the ``lifecycle`` console script."""
    cli(prog_name="lifecycle")
