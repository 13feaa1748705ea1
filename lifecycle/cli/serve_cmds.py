"""``lifecycle serve`` and ``lifecycle deploy azure-online``."""

from __future__ import annotations

import click

from lifecycle.cli._base import State, emit, json_option, pass_state, workspace_option
from lifecycle.cli._base import cli as _cli
from lifecycle.cli.deploy_cmds import deploy, plan_text
from lifecycle.cli.env_cmds import (
    allow_restricted_option,
    env_manager_option,
    trust_pickle_option,
)


@_cli.command("serve")
@env_manager_option
@trust_pickle_option
@allow_restricted_option
@click.argument("model_uri")
@click.option(
    "--host",
    envvar="LIFECYCLE_SERVE_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on.",
)
@click.option(
    "--port",
    "-p",
    envvar="LIFECYCLE_SERVE_PORT",
    show_envvar=True,
    default=5000,
    show_default=True,
    type=int,
    help="TCP port.",
)
@click.option(
    "--workers",
    envvar="LIFECYCLE_SERVE_WORKERS",
    show_envvar=True,
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes sharing the port.",
)
@click.option(
    "--api-key",
    envvar="LIFECYCLE_SERVE_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' (or set $LIFECYCLE_SERVE_API_KEY).",
)
@click.option(
    "--max-body-bytes",
    envvar="LIFECYCLE_SERVE_MAX_BODY_BYTES",
    show_envvar=True,
    default=16 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1),
    help="Larger request bodies are answered 413.",
)
@click.option(
    "--timeout",
    envvar="LIFECYCLE_SERVE_TIMEOUT",
    show_envvar=True,
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Seconds per request before answering 504.",
)
@click.option(
    "--max-connections",
    envvar="LIFECYCLE_SERVE_MAX_CONNECTIONS",
    show_envvar=True,
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Open connections per worker; a new one beyond it is answered 503 and closed.",
)
@click.option(
    "--header-timeout",
    envvar="LIFECYCLE_SERVE_HEADER_TIMEOUT",
    show_envvar=True,
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a request may take to arrive once its first byte did (else 408).",
)
@click.option(
    "--keepalive-timeout",
    envvar="LIFECYCLE_SERVE_KEEPALIVE_TIMEOUT",
    show_envvar=True,
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--log-inputs",
    envvar="LIFECYCLE_SERVE_LOG_INPUTS",
    show_envvar=True,
    type=click.Path(file_okay=False),
    default=None,
    help="Append inputs and predictions to Parquet files in this folder.",
)
@click.option(
    "--poll-interval",
    envvar="LIFECYCLE_SERVE_POLL_INTERVAL",
    show_envvar=True,
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between registry checks for stage/alias URIs (0: never).",
)
@click.option(
    "--name",
    "model_name",
    envvar="LIFECYCLE_SERVE_MODEL_NAME",
    show_envvar=True,
    default=None,
    help="A model directory's name in /version and the V2 routes (default: model).",
)
@click.option(
    "--model-version",
    envvar="LIFECYCLE_SERVE_MODEL_VERSION",
    show_envvar=True,
    default=None,
    help="A model directory's version in /version and the V2 routes (default: none).",
)
@click.option(
    "--no-record", is_flag=True, help="Do not record this deployment on the model version."
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Resolve and load through the registry before answering, even when a previous "
    "start left a verified local copy of this pinned version.",
)
@click.option(
    "--prepare-only",
    is_flag=True,
    help="Resolve, download and verify this pinned version (or model directory) into the "
    "local cache, then exit (e.g. while building a container image: the server then starts "
    "warm).",
)
@json_option
@workspace_option
@pass_state
def serve_cmd(
    state: State,
    model_uri: str,
    host: str,
    port: int,
    workers: int,
    api_key: str | None,
    max_body_bytes: int,
    timeout: float,
    max_connections: int,
    header_timeout: float,
    keepalive_timeout: float,
    log_inputs: str | None,
    poll_interval: float,
    model_name: str | None,
    model_version: str | None,
    no_record: bool,
    no_cache: bool,
    prepare_only: bool,
    as_json: bool,
    workspace: str | None,
) -> None:
    """Serve a registered model over HTTP (MLflow's /invocations protocol and Azure's).

    Stage and alias URIs are followed: a newly promoted version is swapped in without
    dropping requests. A pinned version (models:/NAME/N) that was served before starts
    from its verified local copy (content digest checked) and asks the registry once it
    is ready. SIGTERM finishes in-flight requests, then exits.

    \b
    Example:
      lifecycle serve models:/churn/Production -w prod --port 5001 --workers 2
      curl -s localhost:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}'
    """
    from serving.server import prepare_cache, serve

    if prepare_only:
        done = prepare_cache(state.workspace_obj(workspace), model_uri)
        where = f" (workspace '{done['workspace']}')" if done["workspace"] else ""
        emit(
            done,
            as_json,
            f"Cached {model_uri}{where} at {done['path']}: "
            + ("the next start is warm" if done["warm_start"] else "no fast path, starts cold"),
        )
        return
    click.echo(
        f"Loading {model_uri}; it will answer on http://{host}:{port} once /health is ready "
        "(Ctrl-C to stop)",
        err=True,
    )
    serve(
        state.workspace_obj(workspace),
        model_uri,
        host=host,
        port=port,
        workers=workers,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        timeout=timeout,
        log_inputs=log_inputs,
        poll_interval=poll_interval,
        record=not no_record,
        cache=not no_cache,
        max_connections=max_connections,
        header_timeout=header_timeout,
        keepalive_timeout=keepalive_timeout,
        model_name=model_name,
        model_version=model_version,
    )


@deploy.command("azure-online")
@allow_restricted_option
@click.argument("name")
@click.option("--version", "version", required=True, help="Registered model version to deploy.")
@click.option("--endpoint", required=True, help="Managed online endpoint name.")
@click.option(
    "--deployment", default="blue", show_default=True, help="Deployment name for this version."
)
@click.option("--instance-type", default="Standard_DS3_v2", show_default=True, help="VM size.")
@click.option(
    "--instance-count", default=1, show_default=True, type=click.IntRange(1), help="Instances."
)
@click.option(
    "--traffic",
    default=None,
    help="Traffic steps after the smoke test, e.g. 'blue=90,green=10' (repeat with ';' for several steps).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="azure-online",
    show_default=True,
    help="Folder for the YAML specs.",
)
@click.option(
    "--apply",
    "apply_",
    is_flag=True,
    help="Create it in Azure ML (needs the azure extra and credentials).",
)
@click.option(
    "--package",
    "package",
    is_flag=True,
    help="Deploy the image `lifecycle package --build` made (--image) as an Azure ML model "
    "package instead of Azure's no-code MLflow server.",
)
@click.option(
    "--image",
    default=None,
    help="With --package: the pushed image, e.g. myregistry.azurecr.io/churn:3.",
)
@workspace_option
@json_option
@pass_state
def deploy_azure_online_cmd(
    state: State,
    name: str,
    version: str,
    endpoint: str,
    deployment: str,
    instance_type: str,
    instance_count: int,
    traffic: str | None,
    out_dir: str,
    apply_: bool,
    package: bool,
    image: str | None,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Write (and with --apply, create) a no-code MLflow managed online deployment, or with
    --package, a deployment of the packaged image as an Azure ML model package.

    The new version goes to its own deployment at 0% traffic, is smoke-invoked with the
    model's input example, then traffic moves in the steps given by --traffic.

    \b
    Example:
      lifecycle deploy azure-online churn --version 3 --endpoint churn-rt \\
        --deployment green --traffic 'blue=90,green=10;green=100' --out specs/ -w prod
      lifecycle deploy azure-online churn --version 3 --endpoint churn-rt --out specs/ \\
        --package --image myregistry.azurecr.io/churn:3 -w prod
    """
    from serving.azure import deploy_online

    if package != (image is not None):
        raise click.UsageError(
            "--package needs --image (the image lifecycle package built and pushed)"
            if package
            else f"--image '{image}' is for --package"
        )

    result = deploy_online(
        state.workspace_obj(workspace),
        name,
        version,
        endpoint=endpoint,
        deployment=deployment,
        instance_type=instance_type,
        instance_count=instance_count,
        traffic=traffic,
        out_dir=out_dir,
        apply=apply_,
        package_image=image,
    )
    emit(
        result,
        as_json,
        lambda r: plan_text(r, endpoint),
    )
