"""Importing origin artifacts (notebook, Designer, AutoML) into a workspace's registry.

The importers in :mod:`models` build an MLflow model directory; this module registers it
with :func:`lifecycle.registry.versions.log_and_register` in a run of the ``lifecycle-imports``
experiment, with the importer's params and metrics, provenance tags on the run and on the
version, and the origin's metadata files (Designer conda env, AutoML scoring file...) as
run artifacts under ``provenance/``.

Re-importing the same artifact (same source SHA-256) under the same name returns the
existing version without loading anything, unless ``force``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.base.errors import InvalidArgumentError, ModelImportError
from lifecycle.base.locks import model_lock
from lifecycle.base.tags import (
    BASELINE_TAG,
    DIGEST_TAG,
    REFERENCE_METRICS_TAG,
    TRAINING_RUN_TAG,
)
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.gates import load_holdout
from lifecycle.registry.journal import require_none
from lifecycle.registry.versions import find_version_by_tag, log_and_register, record_consent
from models.common import (
    ORIGIN_FORMAT_TAG,
    ORIGIN_KIND_TAG,
    PROVENANCE_ARTIFACT_PATH,
    SOURCE_SHA_TAG,
    BuiltModel,
    sha256_path,
)
from models.detect import KINDS, Detection, detect_origin

logger = logging.getLogger(__name__)

IMPORT_EXPERIMENT = "lifecycle-imports"


@dataclass
class ImportResult:
    """What an import registered (or found already registered)."""

    name: str
    version: str
    created: bool
    kind: str
    fmt: str
    workspace: str
    source: str
    source_sha256: str
    run_id: str = ""
    digest: str = ""
    summary: str = ""
    detected: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "kind": self.kind,
            "format": self.fmt,
            "workspace": self.workspace,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "run_id": self.run_id,
            "digest": self.digest,
            "summary": self.summary,
            "detected": self.detected,
        }


def import_model(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    kind: str | None = None,
    sample: str | Path | None = None,
    target: str | None = None,
    trust_pickle: bool = False,
    force: bool = False,
    experiment: str = IMPORT_EXPERIMENT,
    max_archive_bytes: int | None = None,
    run_id: str | None = None,
    holdout: str | Path | None = None,
) -> ImportResult:
    """Import an origin artifact into ``ws`` as a new version of ``name``.

    Args:
        ws: target workspace.
        path: the artifact (file, folder or zip).
        name: registered model name.
        kind: ``notebook``, ``designer`` or ``automl``; None detects it from the artifact
            (the result's ``detected`` says what was found).
        sample: CSV of sample rows (notebook: signature and input example; all kinds: kept
            for the post-registration hook).
        target: the sample's target column (left out of the signature).
        trust_pickle: consent to unpickle pickle/joblib files.
        max_archive_bytes: how much a zip may unpack to (default: 10 times its size, at
            least 64 MiB, at most 1 GiB; :mod:`models.archives`).
        force: register a new version even if this artifact was imported before.
        experiment: experiment of the import run.
        run_id: the run (in ``ws``) that trained the model: its metrics and params are
            carried onto the import run, so promotion gates can use them.
        holdout: a labelled CSV (label column ``target``): the model's metrics on it become
            the version's reference metrics, under their plain names (``accuracy``...).

    Returns:
        The :class:`ImportResult` (``created`` False when an existing version was reused).

    Raises:
        UntrustedPickleError: a pickle without ``trust_pickle``.
        ModelImportError: the artifact cannot be imported (nothing is registered).
        InvalidArgumentError: an unknown ``kind`` or an empty ``name``.
        PromotionError: registration failed and was rolled back.
    """
    src = Path(path)
    if not name or not name.strip():
        raise InvalidArgumentError("Model name must not be empty")
    if holdout is not None and not target:
        raise InvalidArgumentError("--holdout needs --target (the holdout's label column)")
    holdout_data = load_holdout(holdout, str(target)) if holdout is not None else None
    training = _training_run(ws, run_id) if run_id else None
    if kind is not None and kind not in KINDS:
        raise InvalidArgumentError(
            f"Unknown origin kind '{kind}'. Value must be one of {', '.join(KINDS)}"
        )
    if not src.exists():
        raise ModelImportError(f"Source '{src}' does not exist")
    detection: Detection | None = None
    if kind is None:
        detection = detect_origin(src)
        kind = detection.kind
        logger.info("detected %s", detection.describe())
    from models.archives import ArchiveLimits

    # A folder and a zip of it are the same source (the zip's contents are hashed).
    sha = sha256_path(src, ArchiveLimits(max_bytes=max_archive_bytes))
    if not force:
        existing = find_version_by_tag(ws, name, SOURCE_SHA_TAG, sha)
        if existing is not None:
            tags = dict(existing.tags or {})
            logger.info("%s v%s already holds %s; reusing it", name, existing.version, src.name)
            if trust_pickle:  # consent given now for the source that version was built from
                record_consent(ws, name, str(existing.version), "import --trust-pickle")
            return ImportResult(
                name=name,
                version=str(existing.version),
                created=False,
                kind=tags.get(ORIGIN_KIND_TAG, kind),
                fmt=tags.get(ORIGIN_FORMAT_TAG, detection.fmt if detection else ""),
                workspace=ws.name,
                source=str(src),
                source_sha256=sha,
                run_id=str(existing.run_id or ""),
                digest=tags.get(DIGEST_TAG, ""),
                summary="already imported",
                detected=detection.describe() if detection else None,
                tags=tags,
            )
    with tempfile.TemporaryDirectory(prefix="lifecycle-import-") as tmp:
        work = Path(tmp)
        built = build_model(
            src,
            work / "model",
            kind,
            sample=sample,
            target=target,
            trust_pickle=trust_pickle,
            max_archive_bytes=max_archive_bytes,
        )
        prov_dir = _provenance_dir(work / PROVENANCE_ARTIFACT_PATH, built, detection)
        params = {
            "origin.kind": built.kind,
            "origin.format": built.fmt,
            "source": built.source_name,
        }
        params.update(built.params)
        metrics = dict(built.metrics or {})
        tags = dict(built.tags)
        reference: dict[str, float] = {}
        if holdout_data is not None:
            reference = _holdout_metrics(built.model_dir, *holdout_data)
            tags[REFERENCE_METRICS_TAG] = f"holdout {Path(str(holdout)).name}"
        if training is not None:
            for key, number in training[0].items():
                metrics[f"training_{key}" if key in reference else key] = number
            for key, text in training[1].items():
                params.setdefault(key, text)
            tags[TRAINING_RUN_TAG] = str(run_id)
            tags.setdefault(REFERENCE_METRICS_TAG, f"training run {run_id}")
        metrics.update(reference)
        # Under the model's lock: the check for an earlier import of the same source is
        # repeated there (two imports at once register it once), and a killed promotion's
        # journal stops the import with the repair command.
        with model_lock(ws, name, purpose="import", create=True):
            require_none(ws, name)
            reg = log_and_register(
                ws,
                built.model_dir,
                name,
                experiment=experiment,
                run_name=f"import {built.kind} {built.source_name}",
                params=params,
                metrics=metrics,
                run_tags=tags,
                version_tags=tags,
                description=built.summary,
                dedupe_tag=(SOURCE_SHA_TAG, sha),
                force=force,
                extra_artifacts={PROVENANCE_ARTIFACT_PATH: prov_dir},
                trust_pickle=trust_pickle,
            )
    result = ImportResult(
        name=name,
        version=reg.version,
        created=reg.created,
        kind=built.kind,
        fmt=built.fmt,
        workspace=ws.name,
        source=str(src),
        source_sha256=sha,
        run_id=reg.run_id,
        digest=reg.digest,
        summary=built.summary,
        detected=detection.describe() if detection else None,
        tags=built.tags,
    )
    source = f"holdout {Path(str(holdout)).name}" if holdout_data is not None else None
    _after_register(ws, result, built.sample, built.labels, reference, source)
    return result


def _training_run(ws: Workspace, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and params of the training run ``run_id`` in ``ws``.

    Raises:
        ModelImportError: no such run there.
    """
    try:
        run = ws.client().get_run(run_id)
    except Exception as exc:
        raise ModelImportError(
            f"Training run '{run_id}' not found in workspace '{ws.name}': "
            f"{getattr(exc, 'message', exc)}".splitlines()[0]
        ) from exc
    return dict(run.data.metrics), dict(run.data.params)


def _holdout_metrics(model_dir: Path, features: Any, labels: Any) -> dict[str, float]:
    """The built model's metrics on a labelled holdout (the version's reference)."""
    from lifecycle.base.loader import load_pyfunc
    from lifecycle.base.metrics import infer_task, task_metrics

    model = load_pyfunc(str(model_dir), suppress_warnings=True)
    try:
        predictions = model.predict(features)
    except Exception as exc:
        raise ModelImportError(
            f"The model cannot score the holdout: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    if hasattr(predictions, "iloc") and getattr(predictions, "ndim", 1) == 2:
        predictions = predictions.iloc[:, 0]
    return task_metrics(infer_task(labels), labels, predictions)


def build_model(
    src: Path,
    out_dir: Path,
    kind: str,
    *,
    sample: str | Path | None = None,
    target: str | None = None,
    trust_pickle: bool = False,
    max_archive_bytes: int | None = None,
) -> BuiltModel:
    """Build the MLflow model directory for ``src`` with the importer of ``kind``."""
    from models.archives import ArchiveLimits

    limits = ArchiveLimits(max_bytes=max_archive_bytes)
    if kind == "notebook":
        from models.notebook import build_notebook_model

        return build_notebook_model(
            src,
            out_dir,
            sample=sample,
            target=target,
            trust_pickle=trust_pickle,
            archive_limits=limits,
        )
    sample_df = labels = None
    if sample is not None and kind == "designer":
        from models.common import read_sample_csv

        sample_df, labels = read_sample_csv(Path(sample), target)
    if kind == "designer":
        from models.designer import build_designer_model

        built = build_designer_model(src, out_dir, trust_pickle=trust_pickle, archive_limits=limits)
        if sample_df is not None:
            from models.common import select_features

            features = list(built.sample.columns) if built.sample is not None else []
            built.sample = select_features(
                sample_df, features, f"sample '{Path(sample or '').name}'"
            )
            built.labels = labels
        return built
    if kind == "automl":
        from models.automl import build_automl_model

        return build_automl_model(
            src,
            out_dir,
            trust_pickle=trust_pickle,
            sample=sample,
            target=target,
            archive_limits=limits,
        )
    raise InvalidArgumentError(
        f"Unknown origin kind '{kind}'. Value must be one of {', '.join(KINDS)}"
    )


def _provenance_dir(dest: Path, built: BuiltModel, detection: Detection | None) -> Path:
    dest.mkdir(parents=True)
    for fname, path in built.provenance_files.items():
        shutil.copy2(path, dest / fname)
    record = {
        "kind": built.kind,
        "format": built.fmt,
        "source_name": built.source_name,
        "source_sha256": built.source_sha256,
        "summary": built.summary,
        "detected": detection.describe() if detection else None,
        "tags": built.tags,
        "files": sorted(built.provenance_files),
    }
    (dest / "provenance.json").write_text(
        json.dumps(record, indent=2, sort_keys=True), encoding="utf-8"
    )
    return dest


def _after_register(
    ws: Workspace,
    result: ImportResult,
    sample_df: Any,
    labels: Any,
    reference: dict[str, float] | None = None,
    reference_source: str | None = None,
) -> None:
    """Called once after every import, with the sample rows (feature columns) and labels.

    The one place where post-registration work that needs the sample goes (e.g. storing a
    baseline data profile with the version). ``sample_df``/``labels`` are None when no
    sample is known; ``result.created`` is False for a re-import that reused a version.
    ``reference`` (metrics on a labelled holdout) becomes the baseline's metrics, which
    monitoring compares new labelled data with; the sample's own stay as ``sample_metrics``.
    """
    rows = 0 if sample_df is None else len(sample_df)
    logger.info(
        "imported %s v%s into %s (%s, sample rows: %d)",
        result.name,
        result.version,
        ws.name,
        "new" if result.created else "existing",
        rows,
    )
    if rows and (result.created or BASELINE_TAG not in (result.tags or {})):
        # Monitoring's baseline: a profile of the sample stored with the version.
        from lifecycle.base.errors import LifecycleError
        from lifecycle.monitor.profile import attach_baseline

        try:
            attach_baseline(
                ws,
                result.name,
                result.version,
                sample_df,
                labels=labels,
                reference_metrics=reference or None,
                reference_source=reference_source,
            )
        except LifecycleError as exc:  # the version stands; a baseline can be attached later
            logger.warning("no baseline stored for %s v%s: %s", result.name, result.version, exc)


def import_notebook(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    sample: str | Path | None = None,
    target: str | None = None,
    trust_pickle: bool = False,
    force: bool = False,
) -> ImportResult:
    """Import a notebook model (joblib/pickle/skops file or MLflow directory); see :func:`import_model`."""
    return import_model(
        ws,
        path,
        name,
        kind="notebook",
        sample=sample,
        target=target,
        trust_pickle=trust_pickle,
        force=force,
    )


def import_designer(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    sample: str | Path | None = None,
    target: str | None = None,
    trust_pickle: bool = False,
    force: bool = False,
) -> ImportResult:
    """Import a Designer ModelDirectory (folder or zip); see :func:`import_model`."""
    return import_model(
        ws,
        path,
        name,
        kind="designer",
        sample=sample,
        target=target,
        trust_pickle=trust_pickle,
        force=force,
    )


def import_automl(
    ws: Workspace,
    path: str | Path,
    name: str,
    *,
    sample: str | Path | None = None,
    target: str | None = None,
    trust_pickle: bool = False,
    force: bool = False,
) -> ImportResult:
    """Import AutoML outputs (mlflow-model/, or model.pkl + conda env + scoring file); see
    :func:`import_model`."""
    return import_model(
        ws,
        path,
        name,
        kind="automl",
        sample=sample,
        target=target,
        trust_pickle=trust_pickle,
        force=force,
    )
