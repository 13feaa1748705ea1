"""``lifecycle env prepare`` / ``lifecycle env show``: a model's own environment, and the
``--env-manager`` option of the commands that load models."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lifecycle.base.consent import TRUST_PICKLE_VAR
from lifecycle.base.envs import ENV_MANAGERS, choose_env_manager, env_path, prepare_env, read_spec
from lifecycle.base.errors import ModelEnvError
from lifecycle.base.fetch import fetch_model
from lifecycle.base.loader import ENV_MANAGER_VAR
from lifecycle.base.restrict import ALLOW_RESTRICTED_VAR
from lifecycle.base.workspaces import quiet_mlflow_progress
from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option

F = TypeVar("F", bound=Callable[..., Any])


def _set_env_manager(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        # An environment variable reaches every process the command starts (server
        # workers, batch workers, Spark's Python workers).
        os.environ[ENV_MANAGER_VAR] = value


def env_manager_option(func: F) -> F:
    """Add ``--env-manager`` (MLflow's name): where a model's pyfunc runs."""
    return click.option(
        "--env-manager",
        type=click.Choice(ENV_MANAGERS),
        default=None,
        expose_value=False,
        callback=_set_env_manager,
        help="Where the model runs: local (this environment), virtualenv (its own, made by "
        "`lifecycle env prepare`), or auto (default: its own when this one cannot load it).",
    )(func)


def _set_trust_pickle(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        os.environ[TRUST_PICKLE_VAR] = "1"  # reaches the workers the command starts


def trust_pickle_option(func: F) -> F:
    """Add ``--trust-pickle`` to a command that loads models: consent for this run."""
    return click.option(
        "--trust-pickle",
        is_flag=True,
        expose_value=False,
        callback=_set_trust_pickle,
        help="Consent, for this run, to unpickling a model that has no consent recorded "
        "(a model directory, a runs:/ URI, or a version not imported with --trust-pickle; "
        "`lifecycle trust NAME VERSION` records it on a version instead).",
    )(func)


def _set_allow_restricted(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        os.environ[ALLOW_RESTRICTED_VAR] = "1"  # reaches the workers the command starts


def allow_restricted_option(func: F) -> F:
    """Add ``--allow-restricted`` to serve, score and deploy: override a restriction."""
    return click.option(
        "--allow-restricted",
        is_flag=True,
        expose_value=False,
        callback=_set_allow_restricted,
        help="Use a restricted version anyway (needs_retraining, or restricted by a release "
        "policy); the override is recorded in the audit.",
    )(func)


@cli.group("env")
def env_group() -> None:
    """A model's own environment (AutoML's runtime, or a model's requirements.txt).

    \b
    Example:
      lifecycle env prepare models:/sales/1 -w dev
      lifecycle env show models:/sales/1 -w dev
    """


@env_group.command("prepare")
@click.argument("model_uri")
@click.option(
    "--find-links",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Install offline from this wheelhouse (pip --no-index --find-links DIR).",
)
@workspace_option
@json_option
@pass_state
def prepare_cmd(
    state: State, model_uri: str, find_links: str | None, workspace: str | None, as_json: bool
) -> None:
    """Build the virtual environment a model needs (cached by its spec's hash; reused by
    serve, score, monitor, baseline and promotion).

    \b
    Example:
      lifecycle env prepare models:/sales/1 -w dev
      lifecycle env prepare models:/sales/1 --find-links wheelhouse/
    """
    ws = state.workspace_obj(workspace)
    with tempfile.TemporaryDirectory(prefix="lifecycle-env-") as tmp:
        with quiet_mlflow_progress():
            fetched = fetch_model(ws, model_uri, tmp, in_place=True, error=ModelEnvError)
        spec = read_spec(fetched.path)
    if spec is None:
        raise ModelEnvError(
            f"{model_uri} records no environment (no lifecycle_env/env.json, no "
            "requirements.txt): it runs in this one"
        )
    cached = (env_path(spec) / ".complete").is_file()
    t0 = time.monotonic()
    log = (lambda _line: None) if as_json else (lambda line: click.echo(line, err=True))
    path = prepare_env(spec, find_links=find_links, log=log)
    result = {
        "model_uri": model_uri,
        "environment": spec.name,
        "hash": spec.digest(),
        "path": str(path),
        "cached": cached,
        "seconds": round(time.monotonic() - t0, 1),
    }
    emit(
        result,
        as_json,
        lambda r: (
            f"environment {r['environment']} ready in {r['path']}"
            + (" (cached)" if r["cached"] else f" (built in {r['seconds']:.0f} s)")
        ),
    )


@env_group.command("show")
@click.argument("model_uri")
@workspace_option
@json_option
@pass_state
def show_cmd(state: State, model_uri: str, workspace: str | None, as_json: bool) -> None:
    """Show the environment a model records, whether it is prepared, and where the model
    would run by default.

    \b
    Example:
      lifecycle env show models:/sales/1 -w dev
    """
    ws = state.workspace_obj(workspace)
    with tempfile.TemporaryDirectory(prefix="lifecycle-env-") as tmp:
        with quiet_mlflow_progress():
            fetched = fetch_model(ws, model_uri, tmp, in_place=True, error=ModelEnvError)
        spec = read_spec(fetched.path)
        chosen = choose_env_manager(fetched.path, "auto")
    result: dict[str, Any] = {"model_uri": model_uri, "environment": None, "runs_in": "local"}
    if spec is not None:
        result.update(
            environment=spec.name,
            hash=spec.digest(),
            python=spec.python,
            path=str(env_path(spec)),
            prepared=(env_path(spec) / ".complete").is_file(),
            runs_in="virtualenv" if chosen is not None else "local",
        )

    def text(r: dict[str, Any]) -> str:
        if r["environment"] is None:
            return f"{model_uri} records no environment: it runs in this one"
        state_ = "prepared" if r["prepared"] else "not prepared (run `lifecycle env prepare`)"
        return (
            f"{model_uri}: environment {r['environment']} (Python {r['python']}, hash "
            f"{r['hash']}), {state_}\n  path: {r['path']}\n  runs in: {r['runs_in']} by default"
        )

    emit(result, as_json, text)
