"""``lifecycle score`` and ``lifecycle deploy azure-batch``: thin wrappers over ``batch``."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from lifecycle.cli._base import cli, emit, json_option, pass_state, workspace_option
from lifecycle.cli.deploy_cmds import deploy, plan_text
from lifecycle.cli.env_cmds import (
    allow_restricted_option,
    env_manager_option,
    trust_pickle_option,
)


def _delimiter(value: str) -> str:
    return {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)


class _Progress:
    """A one-line progress display on a terminal (rows, rows/s, ETA); silent in a pipe."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.time()
        if now - self.last < 0.5:
            return
        self.last = now
        rate = event["rows_per_s"]
        frac = min(1.0, event["bytes_done"] / max(event["bytes_total"], 1))
        bar = "#" * int(frac * 30)
        eta = ""
        if rate > 0 and event["rows_read"] and frac > 0:
            elapsed_rows = event["rows_read"]
            eta = f" ETA {max(0.0, elapsed_rows / rate * (1 / frac - 1)):.0f}s"
        click.echo(
            f"\r[{bar:<30}] {event['rows_read']:,} rows {rate:,.0f} rows/s{eta}   ",
            nl=False,
            err=True,
        )

    def close(self) -> None:
        if self.last:
            click.echo("", err=True)


@cli.command("score")
@env_manager_option
@trust_pickle_option
@allow_restricted_option
@click.argument("model_uri")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o", "--output", required=True, help="Output file, or a folder for one output per input."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    default=None,
    help="Output format (default: from the extension).",
)
@click.option(
    "--keep-columns", default=None, help="Comma-separated input columns copied to the output."
)
@click.option("--keep-all", is_flag=True, help="Copy every input column to the output.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Scoring processes (default: all cores). For scikit-learn models saved with skops "
    "and an all-numeric signature: threads of one process (checked against pyfunc).",
)
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), default=None, help="Rows per chunk (default 20000)."
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fail when more than this fraction of rows is rejected.",
)
@click.option(
    "--delimiter", default=",", show_default=True, help="CSV field delimiter (\\t or tab for tabs)."
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: processes on this machine; spark: a Spark session (local[*] or --master).",
)
@click.option(
    "--master",
    default=None,
    help="Spark master URL (with --engine spark; default local[*]). With a cluster master, "
    "inputs are URIs every node reads (hdfs://, s3a://, abfss://, dbfs:/, file://).",
)
@click.option(
    "--shared-path",
    is_flag=True,
    help="With a cluster master: the local input paths are on storage mounted at the same "
    "path on every Spark node.",
)
@click.option("--no-resume", is_flag=True, help="Ignore a checkpoint left by a killed run.")
@workspace_option
@json_option
@pass_state
def score_cmd(
    state: Any,
    model_uri: str,
    inputs: tuple[str, ...],
    output: str,
    fmt: str | None,
    keep_columns: str | None,
    keep_all: bool,
    workers: int | None,
    chunk_rows: int | None,
    max_error_rate: float,
    delimiter: str,
    engine: str,
    master: str | None,
    shared_path: bool,
    no_resume: bool,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Score CSV/Parquet files with a model: one prediction per row, in input order.

    \b
    Example:
      lifecycle score models:/churn/Production data/*.csv --output scored.csv -w prod
      lifecycle score models:/churn/3 big.csv -o out.parquet --keep-columns id --workers 2
      lifecycle score models:/churn/3 hdfs://nn/data/ -o hdfs://nn/scored/ --engine spark \\
        --master spark://head:7077
    """
    from batch.engine import score

    progress = _Progress() if sys.stderr.isatty() and not as_json else None
    try:
        manifest = score(
            state.workspace_obj(workspace),
            model_uri,
            list(inputs),
            output,
            fmt=fmt,
            keep_columns=keep_columns.split(",") if keep_columns else None,
            keep_all=keep_all,
            workers=workers,
            chunk_rows=chunk_rows,
            max_error_rate=max_error_rate,
            delimiter=_delimiter(delimiter),
            engine=engine,
            resume=not no_resume,
            master=master,
            progress=progress,
            shared_path=shared_path,
        )
    finally:
        if progress is not None:
            progress.close()
    emit(
        manifest.to_dict(),
        as_json,
        lambda m: (
            f"Scored {m['rows_scored']} of {m['rows_read']} rows "
            f"({m['rows_rejected']} rejected) into {output} in {m['duration_s']:.1f} s"
        ),
    )


@deploy.command("azure-batch")
@allow_restricted_option
@click.argument("name")
@click.option("--version", "version", required=True, help="Registered model version.")
@click.option("--endpoint", required=True, help="Batch endpoint name.")
@click.option("--compute", required=True, help="Azure ML compute cluster name.")
@click.option(
    "--deployment",
    "deployment_name",
    default="default",
    show_default=True,
    help="Name of the deployment under the endpoint.",
)
@click.option(
    "--mini-batch-size",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Files per mini-batch.",
)
@click.option(
    "--instance-count",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Compute nodes the batch job runs on.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="0: fail on the first failed file; 1: ignore failed files (Azure counts files, so "
    "other fractions need --error-threshold).",
)
@click.option(
    "--error-threshold",
    type=click.IntRange(min=-1),
    default=None,
    help="Failed files (mini-batch inputs) tolerated before the job fails; -1: all. "
    "Overrides --max-error-rate.",
)
@click.option(
    "--out", "out_dir", default="azure-batch", show_default=True, help="Folder for the YAML specs."
)
@click.option(
    "--apply", "apply_", is_flag=True, help="Create the model, endpoint and deployment in Azure ML."
)
@workspace_option
@json_option
@pass_state
def azure_batch_cmd(
    state: Any,
    name: str,
    version: str,
    endpoint: str,
    compute: str,
    deployment_name: str,
    mini_batch_size: int,
    instance_count: int,
    max_error_rate: float,
    error_threshold: int | None,
    out_dir: str,
    apply_: bool,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Write an Azure ML no-code batch deployment of a registered model as YAML.

    \b
    Example:
      lifecycle deploy azure-batch churn --version 3 --endpoint churn-batch --compute cpu --out specs/
    """
    from batch.azure import deploy_azure_batch

    result = deploy_azure_batch(
        state.workspace_obj(workspace),
        name,
        version,
        endpoint=endpoint,
        compute=compute,
        deployment_name=deployment_name,
        mini_batch_size=mini_batch_size,
        instance_count=instance_count,
        max_error_rate=max_error_rate,
        error_threshold=error_threshold,
        out_dir=out_dir,
        apply=apply_,
    )
    emit(
        result,
        as_json,
        lambda r: plan_text(r, endpoint),
    )
