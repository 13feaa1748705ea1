"""The ``lifecycle`` command line. Each submodule adds the commands of one area.

Only this package prints; everything it calls logs.
"""

from __future__ import annotations

import contextlib
import os
import sys

# Importing a command module registers its commands on the group.
from lifecycle.cli import (  # noqa: F401
    batch_cmds,
    demo_cmds,
    deploy_cmds,
    env_cmds,
    import_cmds,
    monitor_cmds,
    package_cmds,
    registry_cmds,
    release_cmds,
    serve_cmds,
    trust_cmds,
    workspace_cmds,
)
from lifecycle.cli._base import cli

__all__ = ["cli", "hoist_global_options", "main"]


#: Options of the ``lifecycle`` group that are also accepted after the subcommand (no
#: subcommand defines options of these names); ``-w`` is each command's own option.
_FLAGS = ("--debug", "-v", "--verbose")
_WITH_VALUE = ("--config",)


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the group's own options moved in front of the subcommand, so that
    ``lifecycle transition churn 2 Production --debug`` works like ``lifecycle --debug
    transition ...`` (errors say "run with --debug" wherever the user put it)."""
    front: list[str] = []
    rest: list[str] = []
    seen_command = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if not seen_command:
            if arg in _WITH_VALUE and i + 1 < len(args):
                front += args[i : i + 2]
                i += 2
                continue
            if not arg.startswith("-"):
                seen_command = True
            (rest if seen_command else front).append(arg)
        elif arg in _FLAGS or ("=" in arg and arg.split("=", 1)[0] in _WITH_VALUE):
            front.append(arg)
        elif arg in _WITH_VALUE and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main() -> None:
    """Entry point of the ``lifecycle`` console script."""
    from lifecycle.base.signals import install

    install()  # SIGTERM/SIGINT raise, so a stopped command runs its own rollback
    try:
        cli(args=hoist_global_options(sys.argv[1:]), prog_name="lifecycle")
    except SystemExit as exc:
        _exit_now(exc)
        raise


def _exit_now(exc: SystemExit) -> None:
    """End the process without the interpreter's teardown, once the command is complete.

    Tearing down the modules a command imports (MLflow, scikit-learn, SciPy, SQLAlchemy,
    Arrow) took about 0.9 s here after every command that loaded a model. The parts of the
    teardown that matter still run first: exit handlers (temporary folders, logging,
    multiprocessing children) and flushing the standard streams. Only when no other
    non-daemon thread is alive; otherwise the normal exit joins them. Daemon threads (e.g.
    MLflow's telemetry consumers, which kept every command that imported MLflow on the slow
    path) are abandoned by the normal exit as well.
    """
    import atexit
    import threading

    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if any(not t.daemon for t in others) or not isinstance(exc.code, (int, type(None))):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe: nothing more can be written anyway.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(exc.code or 0)
