"""Copying a version's files between workspaces: the model directory and the source run's
other artifacts downloaded (with progress), the run's params, metrics and user tags read,
and the copy checked in the target file by file at full size."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifecycle.base.errors import (
    PromotionError,
)
from lifecycle.base.tags import (
    DIGEST_TAG,
    LINEAGE_TAGS,
    PREFIX,
    REGISTERED_MODEL_TAG,
)
from lifecycle.base.workspaces import Workspace, quiet_mlflow_progress, use_workspace

logger = logging.getLogger(__name__)

# Source run tags that describe the source run itself, not the model: not copied.
SKIP_RUN_TAGS = {
    "mlflow.runName",
    "mlflow.log-model.history",
    "mlflow.parentRunId",
    "mlflow.rootRunId",
    REGISTERED_MODEL_TAG,
    DIGEST_TAG,
    *LINEAGE_TAGS,
}

Progress = Callable[[str, int, int], None]
"""``progress(phase, bytes_done, bytes_total)``; phases ``download`` and ``upload``."""


def walk(repo: Any, path: str = "") -> list[tuple[str, int]]:
    files: list[tuple[str, int]] = []
    for info in repo.list_artifacts(path or None):
        if info.is_dir:
            files.extend(walk(repo, info.path))
        else:
            files.append((info.path, int(info.file_size or 0)))
    return files


def download_model(
    ws: Workspace, name: str, version: str, dst: Path, progress: Progress | None
) -> None:
    """Download the files of ``name`` v``version`` (run artifacts or a logged model) to ``dst``."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    dst.mkdir(parents=True, exist_ok=True)
    client = ws.client()
    with use_workspace(ws), quiet_mlflow_progress():
        uri = client.get_model_version_download_uri(name, version)
        repo = get_artifact_repository(uri)
        files = walk(repo)
        if not any(p.rsplit("/", 1)[-1] == "MLmodel" for p, _ in files):
            raise PromotionError(
                f"{name} v{version} in '{ws.name}' has no MLmodel file at its source {uri}"
            )
        total, done = sum(s for _, s in files), 0
        for path, size in files:
            repo.download_artifacts(path, str(dst))
            done += size
            if progress is not None:
                progress("download", done, total)


def download_run_artifacts(
    ws: Workspace, run: Any, model_source: str, dst: Path, progress: Progress | None
) -> dict[str, Path]:
    """Download the source run's artifacts other than the model; returns top-level entries."""
    if run is None:
        return {}
    client = ws.client()
    run_id = run.info.run_id
    base = str(run.info.artifact_uri).rstrip("/") + "/"
    model_top = None
    if model_source.startswith(base):
        model_top = model_source[len(base) :].split("/", 1)[0]
    elif model_source.startswith(f"runs:/{run_id}/"):
        model_top = model_source[len(f"runs:/{run_id}/") :].split("/", 1)[0]
    entries = [a for a in client.list_artifacts(run_id) if a.path != model_top]
    out: dict[str, Path] = {}
    if not entries:
        return out
    dst.mkdir(parents=True, exist_ok=True)
    total = sum(int(a.file_size or 0) for a in entries)
    done = 0
    for entry in entries:
        with quiet_mlflow_progress():
            local = client.download_artifacts(run_id, entry.path, str(dst))
        target = entry.path if entry.path != "model" else "source_model"
        out[target] = Path(local)
        done += int(entry.file_size or 0)
        if progress is not None and total:
            progress("download", done, total)
    return out


def run_data(ws: Workspace, run: Any) -> tuple[dict[str, str], list[Any], dict[str, str]]:
    """Params, full metric history and copyable tags of the source run."""
    if run is None:
        return {}, [], {}
    client = ws.client()
    run_id = run.info.run_id
    history: list[Any] = []
    for key in run.data.metrics:
        history.extend(client.get_metric_history(run_id, key))
    tags = {k: v for k, v in run.data.tags.items() if k not in SKIP_RUN_TAGS}
    return dict(run.data.params), history, tags


def user_version_tags(mv: Any) -> dict[str, str]:
    """The source version's own tags, minus ours and MLflow's (they describe the source:
    stage, digest, audit marks, references into the source server)."""
    tags = dict(getattr(mv, "tags", None) or {})
    return {k: v for k, v in tags.items() if not k.startswith((PREFIX, "mlflow."))}


def upload_progress(progress: Progress | None) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    report = progress

    def upload(done: int, total: int) -> None:
        report("upload", done, total)

    return upload


def verify_copy(ws: Workspace, name: str, version: str, model_dir: Path) -> None:
    """The target must serve every file that passed the gates, at its full size.

    Listing the target's files is cheap; downloading them again to re-hash would double the
    transfer of a large model. The content digest itself is checked by the smoke test's copy
    and recorded on the version.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    expected = {
        p.relative_to(model_dir).as_posix(): p.stat().st_size
        for p in model_dir.rglob("*")
        if p.is_file()
    }
    with use_workspace(ws):
        uri = ws.client().get_model_version_download_uri(name, version)
        got = dict(walk(get_artifact_repository(uri)))
    bad = sorted(k for k, size in expected.items() if got.get(k) != size)
    if bad:
        raise PromotionError(
            f"{name} v{version} in '{ws.name}' is incomplete: {len(bad)} file(s) missing or of "
            f"the wrong size, e.g. {bad[0]}"
        )
