"""``lifecycle import``: notebook, Designer and AutoML artifacts into a workspace's registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option

if TYPE_CHECKING:
    from lifecycle.imports import ImportResult


class _ImportGroup(click.Group):
    """``lifecycle import PATH ...`` (no kind) runs the hidden ``auto`` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["auto", *args]
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The group's help lists the options of ``lifecycle import PATH`` too (the form
        without a kind), which is otherwise a hidden command."""
        super().format_options(ctx, formatter)
        auto = self.commands.get("auto")
        if auto is None:
            return
        sub = click.Context(auto, info_name="auto", parent=ctx)
        rows = [
            r
            for p in auto.get_params(sub)
            if isinstance(p, click.Option) and (r := p.get_help_record(sub)) is not None
        ]
        with formatter.section("Options of 'lifecycle import PATH' (kind detected)"):
            formatter.write_dl(rows)


def _import_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.argument("path", type=click.Path(exists=False)),
            click.option("--name", "-n", required=True, help="Registered model name."),
            click.option(
                "--sample",
                type=click.Path(dir_okay=False),
                help="CSV of sample rows: the monitoring baseline (every kind) and, for "
                "notebook models, the signature and input example.",
            ),
            click.option(
                "--target", help="The sample's target column (left out of the signature)."
            ),
            click.option(
                "--trust-pickle",
                is_flag=True,
                help="Consent to unpickle pickle/joblib files (unpickling runs code from the file).",
            ),
            click.option(
                "--force", is_flag=True, help="Register a new version even if already imported."
            ),
            click.option(
                "--run-id",
                default=None,
                help="The run (in the same workspace) that trained the model: its metrics and "
                "params go onto the import run, so promotion gates can use them "
                "(`lifecycle train` prints it).",
            ),
            click.option(
                "--holdout",
                type=click.Path(dir_okay=False),
                default=None,
                help="Labelled CSV (label column --target): the model's metrics on it become "
                "the version's reference metrics (accuracy, f1_macro, rmse...).",
            ),
            click.option(
                "--max-archive-bytes",
                type=click.IntRange(min=1),
                default=None,
                help="How many bytes a zip may unpack to (default: 10x the zip's size, at least "
                "64 MiB, at most 1 GiB; a larger zip is refused before anything is written).",
            ),
            workspace_option,
            json_option,
        ]
    ):
        func = option(func)
    return func


def _run(
    state: State, kind: str | None, path: str, workspace: str | None, as_json: bool, **kw: Any
) -> None:
    # Imported here, not at the top: the importers pull in pandas (~0.25 s), which every
    # other command (``score`` above all) would otherwise pay at start.
    from lifecycle.imports import import_model

    result = import_model(state.workspace_obj(workspace), path, kw.pop("name"), kind=kind, **kw)

    def text(r: ImportResult) -> str:
        lines = [f"Detected {r.detected}"] if r.detected else []
        lines.append(f"{r.name} version {r.version}")
        if not r.created:
            lines.append("(already imported from the same source; --force registers a new version)")
        return "\n".join(lines)

    emit(result.to_dict() if as_json else result, as_json, text)


@cli.group("import", cls=_ImportGroup)
def import_group() -> None:
    """Import a notebook, Designer or AutoML model into a workspace's registry.

    Without a kind (`lifecycle import PATH --name NAME`) the origin is detected from the
    artifact and reported. Pickle and joblib files are only loaded with --trust-pickle.

    \b
    Example:
      lifecycle import notebook model.joblib --name churn --sample train.csv --target churned --trust-pickle
      lifecycle import designer trained_model_outputs/ --name credit --trust-pickle -w dev
      lifecycle import automl best_model.zip --name sales --trust-pickle
      lifecycle import ./outputs --name sales --trust-pickle
    """


@import_group.command("notebook")
@_import_options
@pass_state
def import_notebook_cmd(
    state: State, path: str, workspace: str | None, as_json: bool, **kw: Any
) -> None:
    """Import a joblib/pickle/skops file or an MLflow model directory.

    \b
    Example:
      lifecycle import notebook model.joblib --name churn --sample train.csv --target churned --trust-pickle
    """
    _run(state, "notebook", path, workspace, as_json, **kw)


@import_group.command("designer")
@_import_options
@pass_state
def import_designer_cmd(
    state: State, path: str, workspace: str | None, as_json: bool, **kw: Any
) -> None:
    """Import an Azure ML Designer ModelDirectory (trained_model_outputs/ or a zip of it).

    \b
    Example:
      lifecycle import designer trained_model_outputs/ --name credit --trust-pickle
    """
    _run(state, "designer", path, workspace, as_json, **kw)


@import_group.command("automl")
@_import_options
@pass_state
def import_automl_cmd(
    state: State, path: str, workspace: str | None, as_json: bool, **kw: Any
) -> None:
    """Import AutoML outputs: mlflow-model/, or model.pkl + conda_env_v_*.yml + scoring_file_v_*.py.

    \b
    Example:
      lifecycle import automl outputs/ --name sales --trust-pickle
    """
    _run(state, "automl", path, workspace, as_json, **kw)


@import_group.command("auto", hidden=True)
@_import_options
@pass_state
def import_auto_cmd(
    state: State, path: str, workspace: str | None, as_json: bool, **kw: Any
) -> None:
    """Detect the origin of PATH and import it (what `lifecycle import PATH` runs).

    \b
    Example:
      lifecycle import ./outputs --name sales --trust-pickle
    """
    _run(state, None, path, workspace, as_json, **kw)
