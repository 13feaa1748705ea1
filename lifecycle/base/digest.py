"""Content digests of MLflow model directories, stable across copies between workspaces.

The digest covers every file of the model. In ``MLmodel`` it ignores the fields MLflow
rewrites whenever a model is saved or logged (``run_id``, ``model_uuid``, ``model_id``,
``utc_time_created``, ``artifact_path``...), so the same model copied into another workspace
keeps its digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

VOLATILE_MLMODEL_KEYS = frozenset(
    {
        "run_id",
        "model_uuid",
        "model_id",
        "utc_time_created",
        "artifact_path",
        "databricks_runtime",
        "model_size_bytes",
        "mlflow_version",
        "saved_input_example_info",
    }
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _bytecode_cache(rel: str) -> bool:
    """Python's bytecode cache: written next to a model's code whenever it is imported in
    place (a local store's files), so it is never part of the model's content."""
    return "__pycache__/" in f"/{rel}" or rel.endswith((".pyc", ".pyo"))


def model_digest(model_dir: str | Path) -> str:
    """``sha256:<hex>`` over the model directory's files (volatile MLmodel fields and Python
    bytecode caches left out)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if _bytecode_cache(rel):
            continue
        if rel == "MLmodel":
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            stable = {k: v for k, v in data.items() if k not in VOLATILE_MLMODEL_KEYS}
            content = yaml.safe_dump(stable, sort_keys=True).encode()
        else:
            content = sha256_file(path).encode()
        h.update(rel.encode() + b"\0" + content + b"\0")
    return "sha256:" + h.hexdigest()
