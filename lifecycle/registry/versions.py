"""Log an MLflow model directory as a run of a workspace and register it, atomically.

This is the one way a model enters a registry (imports and promotions both use it):

1. a run in the workspace with the given params, metrics and tags, the model directory
   uploaded as the run's ``model`` artifact;
2. a new version of the registered model whose source is that run's artifacts: never a
   reference into another server, never an MLflow 3 logged model (Azure ML answers 404 for
   those);
3. if anything fails after the run was created, what was created is removed again (or
   tagged failed where the backend refuses deletion) and the error is raised.

Registration is idempotent: a version whose dedupe tag (by default the model's content
digest) already exists is returned instead of registering a duplicate, unless ``force``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.base.audit import current_user
from lifecycle.base.consent import consent_tag_value, unpickling_reason
from lifecycle.base.digest import model_digest
from lifecycle.base.errors import ModelImportError, PromotionError
from lifecycle.base.refs import search_versions
from lifecycle.base.tags import DIGEST_TAG, FAILED_TAG, PICKLE_CONSENT_TAG, REGISTERED_MODEL_TAG
from lifecycle.base.workspaces import Workspace, get_or_create_experiment

logger = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "model"


@dataclass
class Registration:
    """The outcome of :func:`log_and_register`."""

    name: str
    version: str
    run_id: str
    digest: str
    created: bool
    source: str
    model_version: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "digest": self.digest,
            "created": self.created,
            "source": self.source,
        }


def find_version_by_tag(ws: Workspace, name: str, key: str, value: str) -> Any | None:
    """The newest non-failed version of ``name`` whose tag ``key`` equals ``value``."""
    from mlflow.exceptions import MlflowException

    try:
        versions = search_versions(ws, name)
    except MlflowException:
        return None
    hits = [
        v
        for v in versions
        if (v.tags or {}).get(key) == value and (v.tags or {}).get(FAILED_TAG) != "true"
    ]
    return max(hits, key=lambda v: int(v.version)) if hits else None


def log_and_register(
    ws: Workspace,
    model_dir: str | Path,
    name: str,
    *,
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | Iterable[Any] | None = None,
    run_tags: Mapping[str, str] | None = None,
    version_tags: Mapping[str, str] | None = None,
    description: str | None = None,
    dedupe_tag: tuple[str, str] | None = None,
    force: bool = False,
    extra_artifacts: Mapping[str, str | Path] | None = None,
    before_register: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    trust_pickle: bool = False,
) -> Registration:
    """Log ``model_dir`` in a new run of ``ws`` and register it as a new version of ``name``.

    Args:
        ws: target workspace.
        model_dir: an MLflow model directory (with ``MLmodel``).
        name: registered model name.
        experiment: experiment of the new run (created if missing).
        params, metrics, run_tags: run data. ``metrics`` is a name->value mapping or an
            iterable of ``mlflow.entities.Metric`` (to copy a full history).
        version_tags: tags of the new version (the content digest is always added).
        dedupe_tag: (key, value) that identifies "the same model"; default the digest.
        force: register a new version even if an identical one exists.
        extra_artifacts: run artifact path -> local file or folder, uploaded beside the model.
        before_register: called with the run id after the upload, before registration
            (lets callers add work, and lets tests inject a failure there).
        progress: called with (bytes uploaded, bytes total) while the model directory is
            uploaded file by file (a CLI draws a progress bar with it).
        trust_pickle: the user consents to unpickling the model's files; recorded on the
            new version (:data:`~lifecycle.base.tags.PICKLE_CONSENT_TAG`) when loading it
            would unpickle, so later loads by the toolkit accept it.

    Returns:
        The :class:`Registration` (``created`` is False when an existing version was reused).

    Raises:
        ModelImportError: ``model_dir`` is not an MLflow model directory.
        PromotionError: logging or registration failed; nothing was left behind.
    """
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    model_path = Path(model_dir)
    if not (model_path / "MLmodel").is_file():
        raise ModelImportError(f"'{model_path}' is not an MLflow model directory (no MLmodel file)")
    digest = model_digest(model_path)
    key, value = dedupe_tag or (DIGEST_TAG, digest)
    if not force:
        existing = find_version_by_tag(ws, name, key, value)
        if existing is not None:
            logger.info(
                "%s v%s already holds this model (%s); reusing it", name, existing.version, key
            )
            if trust_pickle and unpickling_reason(model_path):
                record_consent(ws, name, str(existing.version), "register --trust-pickle")
            return Registration(
                name=name,
                version=str(existing.version),
                run_id=str(existing.run_id or ""),
                digest=(existing.tags or {}).get(DIGEST_TAG, digest),
                created=False,
                source=str(existing.source),
                model_version=existing,
            )

    client = ws.client()
    exp_id = get_or_create_experiment(ws, experiment)
    tags = {REGISTERED_MODEL_TAG: name, DIGEST_TAG: digest, **(run_tags or {})}
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    created_model = False
    mv = None
    try:
        now = int(time.time() * 1000)
        metric_objs: list[Any]
        if metrics is None:
            metric_objs = []
        elif isinstance(metrics, Mapping):
            metric_objs = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        else:
            metric_objs = list(metrics)
        param_objs = [Param(str(k), str(v)[:6000]) for k, v in (params or {}).items()]
        _log_batched(client, run_id, metric_objs, param_objs)
        _upload_model_dir(client, run_id, model_path, progress)
        for art_path, local in (extra_artifacts or {}).items():
            local_path = Path(local)
            if local_path.is_dir():
                client.log_artifacts(run_id, str(local_path), art_path)
            else:
                client.log_artifact(run_id, str(local_path), art_path or None)
        if before_register is not None:
            before_register(run_id)
        try:
            client.create_registered_model(name)
            created_model = True
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
        vtags = {DIGEST_TAG: digest, **(version_tags or {})}
        if trust_pickle and PICKLE_CONSENT_TAG not in vtags and unpickling_reason(model_path):
            vtags[PICKLE_CONSENT_TAG] = consent_tag_value("register --trust-pickle", current_user())
        if key != DIGEST_TAG:
            vtags[key] = value
        mv = client.create_model_version(
            name, source, run_id=run_id, tags=vtags, description=description
        )
        mv = _wait_ready(client, name, str(mv.version))
        client.set_terminated(run_id, "FINISHED")
    except BaseException as exc:
        left = _undo(ws, name, run_id, mv, created_model)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if left:
            raise PromotionError(
                f"Registering '{name}' in workspace '{ws.name}' failed ({cause}) and its "
                f"rollback left behind: {'; '.join(left)}"
            ) from exc
        raise PromotionError(
            f"Registering '{name}' in workspace '{ws.name}' failed and was rolled back: {cause}"
        ) from exc
    logger.info("registered %s v%s in %s (run %s)", name, mv.version, ws.name, run_id)
    return Registration(
        name=name,
        version=str(mv.version),
        run_id=run_id,
        digest=digest,
        created=True,
        source=source,
        model_version=mv,
    )


def record_consent(ws: Workspace, name: str, version: str, how: str) -> bool:
    """Record the user's consent to unpickle version ``version`` of ``name`` (kept when one
    is already recorded). True when it was written now."""
    client = ws.client()
    mv = client.get_model_version(name, version)
    if (mv.tags or {}).get(PICKLE_CONSENT_TAG):
        return False
    client.set_model_version_tag(
        name, version, PICKLE_CONSENT_TAG, consent_tag_value(how, current_user())
    )
    logger.info("recorded consent to unpickle %s v%s (%s)", name, version, how)
    return True


def set_consent(ws: Workspace, name: str, version: str, *, revoke: bool = False) -> dict[str, Any]:
    """Record (or with ``revoke`` remove) the user's consent to unpickle a version, with an
    audit event when something changed. What ``lifecycle trust`` reports.

    Raises:
        InvalidArgumentError: ``version`` is not a number.
        ModelNotFoundError: no such model or version in ``ws``.
    """
    from lifecycle.base.audit import record_event
    from lifecycle.base.errors import InvalidArgumentError
    from lifecycle.base.refs import ModelRef, resolve_model

    if not str(version).isdigit():
        raise InvalidArgumentError(f"Invalid version '{version}': expected a number")
    resolve_model(ws, ModelRef(name=name, version=str(version)))  # exists, or a clear error
    if revoke:
        changed = revoke_consent(ws, name, str(version))
    else:
        changed = record_consent(ws, name, str(version), "lifecycle trust")
    if changed:
        record_event(ws, name, "distrust" if revoke else "trust", version=str(version))
    tags = ws.client().get_model_version(name, str(version)).tags or {}
    return {
        "name": name,
        "version": str(version),
        "workspace": ws.name,
        "consent": tags.get(PICKLE_CONSENT_TAG),
        "changed": changed,
    }


def revoke_consent(ws: Workspace, name: str, version: str) -> bool:
    """Remove the consent to unpickle ``name`` v``version``; True when there was one."""
    client = ws.client()
    mv = client.get_model_version(name, version)
    if not (mv.tags or {}).get(PICKLE_CONSENT_TAG):
        return False
    client.delete_model_version_tag(name, version, PICKLE_CONSENT_TAG)
    logger.info("revoked the consent to unpickle %s v%s", name, version)
    return True


def _upload_model_dir(
    client: Any, run_id: str, model_path: Path, progress: Callable[[int, int], None] | None
) -> None:
    if progress is None:
        client.log_artifacts(run_id, str(model_path), MODEL_ARTIFACT_PATH)
        return
    files = sorted(p for p in model_path.rglob("*") if p.is_file())
    total, done = sum(p.stat().st_size for p in files), 0
    for path in files:
        rel_dir = path.parent.relative_to(model_path).as_posix()
        art_dir = MODEL_ARTIFACT_PATH if rel_dir == "." else f"{MODEL_ARTIFACT_PATH}/{rel_dir}"
        client.log_artifact(run_id, str(path), art_dir)
        done += path.stat().st_size
        progress(done, total)


def _log_batched(client: Any, run_id: str, metrics: list[Any], params: list[Any]) -> None:
    # MLflow caps a batch at 1000 metrics / 100 params.
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def _wait_ready(client: Any, name: str, version: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    mv = client.get_model_version(name, version)
    while str(mv.status) in ("PENDING_REGISTRATION", "ModelVersionStatus.PENDING_REGISTRATION"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} v{version} still pending registration after {timeout:.0f}s")
        time.sleep(1)
        mv = client.get_model_version(name, version)
    if "FAILED" in str(mv.status):
        raise RuntimeError(f"{name} v{version} failed registration: {mv.status_message}")
    return mv


def _undo(ws: Workspace, name: str, run_id: str, mv: Any, created_model: bool) -> list[str]:
    """Remove what a failed registration created; return what could not be removed."""
    from lifecycle.base.signals import deferred
    from lifecycle.registry.cleanup import discard_empty_model, discard_run, discard_version

    left: list[str] = []
    with deferred():
        notes = [discard_version(ws, name, str(mv.version)) if mv is not None else None]
        notes.append(discard_run(ws, run_id))
        if created_model:
            notes.append(discard_empty_model(ws, name))
        for note in notes:
            if note is not None and not note.final:
                left.append(note.text)
            elif note is not None:
                logger.warning("after a failed registration: %s", note.text)
    return left
