"""Model URIs and registry stages, resolved inside one workspace.

Accepted forms: ``models:/NAME/<version>``, ``models:/NAME/latest``, ``models:/NAME/<Stage>``
(any letter case), ``models:/NAME@alias``, and a local MLflow model directory.
Stages resolve through the MLflow stage first and the mirrored alias second, so a registry
that lacks one of the two mechanisms still answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.base.errors import InvalidArgumentError, InvalidStageError, ModelNotFoundError
from lifecycle.base.workspaces import Workspace, quiet_mlflow_warnings

logger = logging.getLogger(__name__)

STAGES = ("None", "Staging", "Production", "Archived")
_STAGE_BY_LOWER = {s.lower(): s for s in STAGES}
#: Stage -> the alias that mirrors it (None and Archived have none).
STAGE_ALIASES = {"Staging": "staging", "Production": "production"}


def canonical_stage(stage: str) -> str:
    """``stage`` in canonical case (``production`` -> ``Production``).

    Raises:
        InvalidStageError: not one of None, Staging, Production, Archived.
    """
    canon = _STAGE_BY_LOWER.get(str(stage).strip().lower())
    if canon is None:
        raise InvalidStageError(
            f"Invalid stage '{stage}'. Value must be one of {', '.join(STAGES)} (any letter case)"
        )
    return canon


@dataclass(frozen=True)
class ModelRef:
    """A parsed model URI: exactly one of version, stage, alias, latest, or a local path."""

    name: str | None = None
    version: str | None = None
    stage: str | None = None
    alias: str | None = None
    latest: bool = False
    path: Path | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version or self.stage or 'latest'}"

    @property
    def follows_registry(self) -> bool:
        """True when the URI names a moving target (stage, alias, latest)."""
        return self.path is None and self.version is None


def parse_model_uri(uri: str) -> ModelRef:
    """Parse ``uri`` into a :class:`ModelRef`.

    Raises:
        InvalidArgumentError: not a ``models:/`` URI nor an existing model directory.
        InvalidStageError: the third part is neither a number, ``latest`` nor a stage.
    """
    if not uri.startswith("models:"):
        path = Path(uri)
        if (path / "MLmodel").is_file():
            return ModelRef(path=path.resolve())
        raise InvalidArgumentError(
            f"Invalid model URI '{uri}'. Expected models:/NAME/VERSION, models:/NAME/STAGE, "
            "models:/NAME@ALIAS, models:/NAME/latest or a local MLflow model directory"
        )
    rest = uri[len("models:") :].lstrip("/")
    if not rest:
        raise InvalidArgumentError(f"Invalid model URI '{uri}': no model name")
    if rest.startswith("m-"):
        raise InvalidArgumentError(
            f"Model URI '{uri}' names an MLflow logged model, not a registered model. "
            "Register it first (lifecycle import ...) and use models:/NAME/VERSION"
        )
    if "@" in rest and "/" not in rest.split("@", 1)[1]:
        name, alias = rest.split("@", 1)
        if not name or not alias:
            raise InvalidArgumentError(f"Invalid model URI '{uri}': expected models:/NAME@ALIAS")
        return ModelRef(name=name, alias=alias)
    if "/" not in rest:
        raise InvalidArgumentError(
            f"Invalid model URI '{uri}': expected models:/NAME/VERSION|STAGE|latest "
            "or models:/NAME@ALIAS"
        )
    name, selector = rest.rsplit("/", 1)
    if not name or not selector:
        raise InvalidArgumentError(f"Invalid model URI '{uri}'")
    if selector.isdigit():
        return ModelRef(name=name, version=selector)
    if selector.lower() == "latest":
        return ModelRef(name=name, latest=True)
    try:
        return ModelRef(name=name, stage=canonical_stage(selector))
    except InvalidStageError:
        raise InvalidStageError(
            f"Invalid model URI '{uri}': '{selector}' is not a version number, 'latest' or a "
            f"stage. Stages: {', '.join(STAGES)}"
        ) from None


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned to one registered version (or a local directory) in a workspace."""

    workspace: Workspace
    ref: ModelRef
    name: str | None
    version: str | None
    stage: str | None
    run_id: str | None
    source: str | None
    model_version: Any = None

    @property
    def pinned_uri(self) -> str:
        """``models:/NAME/N`` (or the local path): loads exactly this version."""
        if self.ref.path is not None:
            return str(self.ref.path)
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "workspace": self.workspace.name,
            "uri": str(self.ref),
            "name": self.name,
            "version": self.version,
            "stage": self.stage,
            "run_id": self.run_id,
        }


def get_registered_model(ws: Workspace, name: str) -> Any:
    """The registered model ``name`` in ``ws``.

    Raises:
        ModelNotFoundError: no such registered model.
    """
    from mlflow.exceptions import MlflowException

    client = ws.client()
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _is_not_found(exc):
            raise ModelNotFoundError(
                f"Registered model '{name}' does not exist in workspace '{ws.name}'"
            ) from None
        raise


def get_model_version(ws: Workspace, name: str, version: str | int) -> Any:
    """Version ``version`` of ``name`` in ``ws``.

    Raises:
        ModelNotFoundError: the model or the version does not exist (the message lists the
            versions that do).
    """
    from mlflow.exceptions import MlflowException

    client = ws.client()
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
    get_registered_model(ws, name)  # raises if the model itself is missing
    existing = sorted(int(v.version) for v in search_versions(ws, name))
    raise ModelNotFoundError(
        f"Version '{version}' of model '{name}' does not exist in workspace '{ws.name}'. "
        f"Existing versions: {', '.join(map(str, existing)) or 'none'}"
    )


def search_versions(ws: Workspace, name: str) -> list[Any]:
    """All versions of ``name`` in ``ws`` (aliases are not filled in by MLflow here)."""
    client = ws.client()
    escaped = name.replace("'", "\\'")
    with quiet_mlflow_warnings():
        return list(client.search_model_versions(f"name='{escaped}'"))


def resolve_model(ws: Workspace, uri: str | ModelRef) -> ResolvedModel:
    """Pin ``uri`` to one version in ``ws``.

    Raises:
        ModelNotFoundError: the model, version, stage or alias does not exist.
    """
    ref = parse_model_uri(uri) if isinstance(uri, str) else uri
    if ref.path is not None:
        return ResolvedModel(ws, ref, None, None, None, None, str(ref.path))
    assert ref.name is not None
    name = ref.name
    mv: Any
    if ref.version is not None:
        mv = get_model_version(ws, name, ref.version)
    elif ref.alias is not None:
        mv = _by_alias(ws, name, ref.alias)
        if mv is None:
            get_registered_model(ws, name)
            aliases = _aliases_of(ws, name)
            raise ModelNotFoundError(
                f"Alias '{ref.alias}' of model '{name}' does not exist in workspace "
                f"'{ws.name}'. Existing aliases: {', '.join(sorted(aliases)) or 'none'}"
            )
    elif ref.stage is not None:
        mv = _by_stage(ws, name, ref.stage)
        if mv is None:
            raise ModelNotFoundError(
                f"Model '{name}' has no version in stage '{ref.stage}' in workspace '{ws.name}'"
            )
    else:
        versions = search_versions(ws, name)
        if not versions:
            get_registered_model(ws, name)
            raise ModelNotFoundError(f"Model '{name}' has no versions in workspace '{ws.name}'")
        mv = max(versions, key=lambda v: int(v.version))
    return ResolvedModel(
        workspace=ws,
        ref=ref,
        name=name,
        version=str(mv.version),
        stage=getattr(mv, "current_stage", None),
        run_id=getattr(mv, "run_id", None),
        source=getattr(mv, "source", None),
        model_version=mv,
    )


def _by_alias(ws: Workspace, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    if ws.supports_aliases is False:
        return None
    try:
        return ws.client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _is_not_found(exc) or "alias" in str(exc).lower():
            return None
        raise


def _aliases_of(ws: Workspace, name: str) -> list[str]:
    try:
        rm = ws.client().get_registered_model(name)
    except Exception:  # listing aliases is only for the error message
        return []
    aliases = getattr(rm, "aliases", None) or {}
    return list(aliases)


def _by_stage(ws: Workspace, name: str, stage: str) -> Any:
    if ws.supports_stages is not False:
        matching = [
            v
            for v in search_versions(ws, name)
            if str(getattr(v, "current_stage", "")).lower() == stage.lower()
        ]
        if matching:
            return max(matching, key=lambda v: int(v.version))
    alias = STAGE_ALIASES.get(stage)
    if alias:
        mv = _by_alias(ws, name, alias)
        if mv is not None:
            return mv
    if not search_versions(ws, name):
        get_registered_model(ws, name)
    return None


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()
