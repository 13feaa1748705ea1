"""The record of a scoring run: the manifest written beside the output (model, inputs with\ntheir SHA-256, outputs, counts, timing, package versions) and the MLflow run (and ``batch``\ndeployment) in the model's workspace."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batch.readers import (
    DEFAULT_CHUNK_ROWS,
)
from batch.tuning import no_gc
from lifecycle.base.tags import (
    ENGINE_TAG,
    MODEL_NAME_TAG,
    MODEL_URI_TAG,
    MODEL_VERSION_TAG,
    RUN_KIND_TAG,
)
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)


EXPERIMENT = "batch-scoring"


@dataclass
class Manifest:
    """What a scoring run did: model, inputs, outputs, counts, timing, package versions."""

    model_uri: str
    model_name: str | None
    model_version: str | None
    workspace: str
    engine: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    chunks: int = 0
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    workers: int = 1
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    resumed: bool = False
    started_at: str = ""
    finished_at: str = ""
    run_id: str | None = None
    manifest_path: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    fast_path: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


def sha256(path: Path) -> str:
    from lifecycle.base.digest import sha256_file

    return "sha256:" + sha256_file(path)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in (
        "mlflow-lifecycle",
        "mlflow",
        "scikit-learn",
        "pandas",
        "pyarrow",
        "numpy",
        "pyspark",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


@dataclass
class _RunStore:
    """The MLflow client and experiment a run is recorded in, or why they are unusable."""

    client: Any = None
    experiment_id: str | None = None
    error: Exception | None = None


def open_run_store(ws: Workspace) -> _RunStore:
    """Import MLflow and open ``ws``'s tracking store and the batch-scoring experiment."""
    from lifecycle.base.workspaces import get_or_create_experiment

    try:
        with no_gc():
            client = ws.client()
            return _RunStore(client, get_or_create_experiment(ws, EXPERIMENT))
    except Exception as exc:  # reported by record_run
        return _RunStore(error=exc)


def record_run(
    ws: Workspace,
    store: _RunStore,
    resolved: Any,
    model_uri: str,
    manifest: Manifest,
    manifest_path: Path,
    started: float,
) -> str | None:
    """Record the finished run in ``ws``: a run tagged with the model (its start and end
    times are the scoring's), the manifest as an artifact, counts and throughput as metrics,
    and a ``batch`` deployment on the version. Recording is secondary to scoring: a failure
    is logged as a warning and the output stays.
    """
    from mlflow.entities import Metric

    run_id: str | None = None
    try:
        if store.error is not None:
            raise store.error
        client = store.client
        assert store.experiment_id is not None
        tags = {
            "mlflow.runName": f"score {resolved.name or Path(model_uri).name}"
            + (f" v{resolved.version}" if resolved.version else ""),
            RUN_KIND_TAG: "batch-scoring",
            MODEL_URI_TAG: model_uri,
            ENGINE_TAG: manifest.engine,
        }
        if resolved.name:
            tags[MODEL_NAME_TAG] = resolved.name
            tags[MODEL_VERSION_TAG] = str(resolved.version)
        run = client.create_run(store.experiment_id, start_time=int(started * 1000), tags=tags)
        run_id = str(run.info.run_id)
        now = int(time.time() * 1000)
        metrics = {
            "rows_read": manifest.rows_read,
            "rows_scored": manifest.rows_scored,
            "rows_rejected": manifest.rows_rejected,
            "chunks": manifest.chunks,
            "duration_s": manifest.duration_s,
            "rows_per_s": manifest.rows_per_s,
        }
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        manifest.run_id = run_id
        client.log_dict(run_id, manifest.to_dict(), "manifest.json")
        client.set_terminated(run_id, end_time=now)
        if resolved.name and resolved.version:
            from lifecycle.base.deployments import record_deployment

            target = (
                manifest.outputs[0]["path"]
                if len(manifest.outputs) == 1
                else str(Path(manifest_path).parent)
            )
            record_deployment(
                ws,
                resolved.name,
                resolved.version,
                kind="batch",
                target=target,
                details={
                    "run_id": run_id,
                    "rows_scored": manifest.rows_scored,
                    "engine": manifest.engine,
                },
            )
        return run_id
    except Exception as exc:  # the output is written; failing to record it is a warning
        logger.warning("could not record the scoring run in workspace '%s': %s", ws.name, exc)
        return run_id
