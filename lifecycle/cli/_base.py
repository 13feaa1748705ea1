"""The ``lifecycle`` click group and what every command shares.

Each command lives in a module of this package, is a few lines over one library call,
and uses :func:`workspace_option`, :func:`json_option` and :func:`emit`. Library errors
(:class:`lifecycle.base.errors.LifecycleError`) become one line on stderr and their exit code;
usage errors exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from lifecycle.base.errors import DriftDetectedError, LifecycleError
from lifecycle.base.workspaces import Config, Workspace, load_config

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """Per-invocation state shared by the group and its commands."""

    config_path: str | None = None
    workspace: str | None = None
    debug: bool = False
    _config: Config | None = None

    @property
    def config(self) -> Config:
        """The workspace configuration (loaded once)."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def workspace_obj(self, name: str | None = None) -> Workspace:
        """The workspace named on the command, on the group, or the default."""
        return self.config.get(name or self.workspace)


class LifecycleGroup(click.Group):
    """A click group that turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except LifecycleError as exc:
            _fail(ctx, exc, str(exc), exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo(f"Interrupted ({exc or 'SIGINT'})", err=True)
            sys.exit(getattr(exc, "exit_code", 130))
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                message = str(exc.message if hasattr(exc, "message") else exc)
                _fail(ctx, exc, f"MLflow: {message}".splitlines()[0], 1)
            _fail(ctx, exc, f"{type(exc).__name__}: {exc}".splitlines()[0], 1)


def _fail(ctx: click.Context, exc: BaseException, line: str, code: int) -> None:
    state = ctx.find_object(State)
    if state is not None and state.debug:
        raise exc
    # An expected outcome that a scheduler acts on (drift: exit 3) is not an error.
    prefix = "" if isinstance(exc, DriftDetectedError) else "Error: "
    click.echo(f"{prefix}{line}", err=True)
    if not isinstance(exc, LifecycleError):
        click.echo("(run with --debug for the traceback)", err=True)
    sys.exit(code)


@click.group(cls=LifecycleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="LIFECYCLE_CONFIG",
    type=click.Path(dir_okay=False),
    help="Workspace configuration file (default: ./lifecycle.yaml, else dev/prod in ./.lifecycle).",
)
@click.option("-w", "--workspace", default=None, help="Default workspace for every command.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show the library's progress logs.")
@click.version_option(package_name="mlflow-lifecycle", prog_name="lifecycle")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, workspace: str | None, debug: bool, verbose: bool
) -> None:
    """Move MLflow models from Designer, notebooks and AutoML into production.

    \b
    Example:
      lifecycle import notebook model.joblib --name churn --sample train.csv --trust-pickle
      lifecycle promote churn --version 1 --from dev --to prod --stage Production
      lifecycle score models:/churn/Production input.csv --output scored.csv -w prod
    """
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # MLflow configures its own loggers when first imported; this is the level it reads.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")
    # MLflow writes "View run ... at: URL" to stdout when a run ends on a tracking server;
    # that would corrupt --json output, and only this CLI decides what goes to stdout.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("alembic", "mlflow", "urllib3", "azure", "py4j"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    ctx.obj = State(config_path=config_path, workspace=workspace, debug=debug)


def workspace_option(func: F) -> F:
    """Add ``-w/--workspace`` to a command (falls back to the group's, then the default)."""
    return click.option(
        "-w",
        "--workspace",
        "workspace",
        default=None,
        help="Workspace to act in (default: dev, or the configuration's default).",
    )(func)


def json_option(func: F) -> F:
    """Add ``--json``: print the result as JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def emit(result: Any, as_json: bool, text: str | Callable[[Any], str] | None = None) -> None:
    """Print ``result`` as JSON, or as ``text`` (a string or a function of the result)."""
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str, sort_keys=False))
        return
    if callable(text):
        click.echo(text(result))
    elif text is not None:
        click.echo(text)
    else:
        click.echo(str(result))


pass_state = click.make_pass_decorator(State, ensure=True)
