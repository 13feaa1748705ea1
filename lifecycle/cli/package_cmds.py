"""``lifecycle package``: a registered version as a build context that installs offline and
serves, and (``--build``) an OCI image of it."""

from __future__ import annotations

import click

from lifecycle.cli._base import State, cli, emit, json_option, pass_state, workspace_option
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
