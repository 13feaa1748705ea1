"""``lifecycle package``: a registered version as a build context that installs offline and
serves, and (``--build``) an OCI image of it; ``lifecycle deploy kserve``: an
InferenceService that runs that image."""

from __future__ import annotations

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option
from lifecycle.cli.deploy_cmds import deploy
from lifecycle.cli.env_cmds import allow_restricted_option, trust_pickle_option


@cli.command("package")
@trust_pickle_option
@allow_restricted_option
@click.argument("model_uri")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="New (or empty) folder for the build context.",
)
@click.option("--image", default=None, help="Image name:tag (recorded; built with --build).")
@click.option("--build", is_flag=True, help="Build the image with buildah or podman.")
@click.option(
    "--base",
    default=None,
    help="Base image with the same Python as this one (default: python:3.X-slim).",
)
@workspace_option
@json_option
@pass_state
def package_cmd(
    state: State,
    model_uri: str,
    out: str,
    image: str | None,
    build: bool,
    base: str | None,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Package a model version to run anywhere: a build context with the model (checked
    against its digest), every package pinned, a wheelhouse (no network needed to install),
    the toolkit's own wheel, a Dockerfile and a manifest.

    \b
    DIR/Dockerfile  DIR/model/  DIR/requirements.txt  DIR/wheelhouse/  DIR/manifest.json
    Offline: pip install --no-index --find-links DIR/wheelhouse -r DIR/requirements.txt
             lifecycle serve DIR/model

    \b
    Example:
      lifecycle package models:/churn/3 -w prod --out build/churn-3
      lifecycle package models:/churn/Production -w prod --out build/churn \\
        --image registry.example.com/churn:3 --build
    """
    from lifecycle.base.errors import InvalidArgumentError
    from serving.image import build_image
    from serving.package import package_model

    if build and not image:
        raise InvalidArgumentError("--build needs --image NAME:TAG")
    result = package_model(
        state.workspace_obj(workspace),
        model_uri,
        out,
        image=image,
        base=base,
        log=lambda line: click.echo(line, err=True),
    )
    if build:
        assert image is not None
        built = build_image(result.out, image, base=base, log=lambda m: click.echo(m, err=True))
        result.extra["image_id"] = built.image_id
        result.extra["image_bytes"] = built.size_bytes
        result.extra["builder"] = built.builder

    def text(r: object) -> str:
        lines = [
            f"Packaged {model_uri} (version {result.version}, {result.digest[:19]}…) in "
            f"{result.out}: {result.packages} pinned packages, wheelhouse "
            f"{result.wheelhouse_bytes / 1e6:.0f} MB, {result.seconds:.0f} s"
        ]
        if result.env:
            lines.append(f"  its own environment '{result.env}': wheels in {result.out}/env")
        if build:
            size = result.extra.get("image_bytes")
            mb = f", {size / 1e6:.0f} MB" if size else ""
            lines.append(f"  built {image} with {result.extra['builder']}{mb}")
        else:
            lines.append(f"  build: buildah bud -t {image or 'IMAGE'} {result.out}")
        return "\n".join(lines)

    emit(result.to_dict(), as_json, text)


@deploy.command("kserve")
@allow_restricted_option
@click.argument("name")
@click.option("--version", "version", required=True, help="Registered model version to deploy.")
@click.option("--image", required=True, help="The image `lifecycle package --build` made.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="kserve",
    show_default=True,
    help="Folder for servingruntime.yaml and inferenceservice.yaml.",
)
@click.option("--service", default=None, help="InferenceService name (default: NAME-vVERSION).")
@click.option("--namespace", default=None, help="Kubernetes namespace.")
@click.option("--min-replicas", default=1, show_default=True, type=click.IntRange(0))
@click.option("--max-replicas", default=None, type=click.IntRange(1))
@click.option("--cpu", default="1", show_default=True, help="CPU request and limit.")
@click.option("--memory", default="2Gi", show_default=True, help="Memory request and limit.")
@workspace_option
@json_option
@pass_state
def deploy_kserve_cmd(
    state: State,
    name: str,
    version: str,
    image: str,
    out_dir: str,
    service: str | None,
    namespace: str | None,
    min_replicas: int,
    max_replicas: int | None,
    cpu: str,
    memory: str,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Write a KServe ServingRuntime and InferenceService (Open Inference Protocol V2,
    protocolVersion v2) that run the packaged image: readiness on /v2/health/ready, the
    registry's model name and version on the V2 routes. Apply them with kubectl.

    \b
    Example:
      lifecycle package models:/churn/3 -w prod --out build/churn-3 \\
        --image registry.example.com/churn:3 --build
      lifecycle deploy kserve churn --version 3 --image registry.example.com/churn:3 \\
        --namespace models --out k8s/ -w prod
      kubectl apply -f k8s/
    """
    from serving.kserve import deploy_kserve

    result = deploy_kserve(
        state.workspace_obj(workspace),
        name,
        version,
        image=image,
        out_dir=out_dir,
        service=service,
        namespace=namespace,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu=cpu,
        memory=memory,
    )
    emit(
        result,
        as_json,
        f"Wrote {result['runtime_file']} and {result['file']}: InferenceService "
        f"{result['namespace']}/{result['service']} (V2) running {image}; "
        f"apply: kubectl apply -f {out_dir}",
    )
