"""Partial files and checkpoints of one output: where a run stands (offsets, counts,\nParquet parts), saved every half second, reloaded by a rerun with the same fingerprint,\nand the final rename of the partial files into place. Shared by the local and Spark engines."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batch.pool import JobOptions
from batch.readers import (
    InputFile,
)
from lifecycle.base.errors import ScoringError
from lifecycle.base.files import atomic_write_text

logger = logging.getLogger(__name__)


CHECKPOINT_VERSION = 1


#: Seconds between checkpoints (each flushes the output and writes a JSON file; a resumed
#: run redoes at most this much work).
CHECKPOINT_EVERY_S = 0.5


@dataclass
class Counts:
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    chunks: int = 0


@dataclass
class Partials:
    out: Path
    rejects: Path
    checkpoint: Path
    parts: Path

    @classmethod
    def for_output(cls, out: Path) -> Partials:
        return cls(
            out=out.with_name(f".{out.name}.partial"),
            rejects=out.with_name(f".{out.name}.rejects.partial"),
            checkpoint=out.with_name(f".{out.name}.checkpoint.json"),
            parts=out.with_name(f".{out.name}.parts"),
        )

    def remove(self) -> None:
        for p in (self.out, self.rejects, self.checkpoint):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)


def _fingerprint(base: dict[str, Any], files: list[InputFile], out: Path) -> str:
    data = {
        **base,
        "output": str(out.resolve()),
        "inputs": [(f.where, f.size, f.modified_ns()) for f in files],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def open_checkpoint(
    out: Path, files: list[InputFile], fingerprint_base: dict[str, Any], fmt: str, resume: bool
) -> tuple[Partials, dict[str, Any], bool]:
    """The partial files of ``out`` and the state to continue from: the checkpoint left by a
    run with the same arguments and inputs (when ``resume``), else a fresh state with the
    partials removed. The third value says whether it resumes."""
    partials = Partials.for_output(out)
    fingerprint = _fingerprint(fingerprint_base, files, out)
    state = _load_checkpoint(partials, fingerprint) if resume else None
    if state is not None:
        return partials, state, True
    partials.remove()
    fresh = {
        "version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "file_index": 0,
        "row_in_file": 0,
        "offset": None,
        "out_bytes": 0,
        "rejects_bytes": 0,
        "header": None,
        "seq": 0,
        "parts": 0,
        "format": fmt,
        "counts": asdict(Counts()),
    }
    return partials, fresh, False


def _load_checkpoint(partials: Partials, fingerprint: str) -> dict[str, Any] | None:
    if not partials.checkpoint.is_file():
        return None
    try:
        state = json.loads(partials.checkpoint.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if state.get("fingerprint") != fingerprint or state.get("version") != CHECKPOINT_VERSION:
        logger.info("checkpoint for different arguments or inputs: starting over")
        return None
    if state.get("format") == "parquet":
        parts = state.get("parts", 0)
        if not all((partials.parts / f"{i:06d}.parquet").is_file() for i in range(parts)):
            return None
    elif not partials.out.is_file() or partials.out.stat().st_size < state["out_bytes"]:
        return None
    if state["rejects_bytes"] and (
        not partials.rejects.is_file() or partials.rejects.stat().st_size < state["rejects_bytes"]
    ):
        return None
    return dict(state)


def save_checkpoint(
    partials: Partials, state: dict[str, Any], out_fh: Any, rej_fh: Any, counts: Counts
) -> None:
    out_fh.flush()
    rej_fh.flush()
    state["out_bytes"] = out_fh.tell()
    state["rejects_bytes"] = rej_fh.tell()
    state["counts"] = asdict(counts)
    atomic_write_text(partials.checkpoint, json.dumps(state))


def finish(out: Path, partials: Partials, opts: JobOptions, counts: Counts) -> None:
    rejects_final = rejects_path(out)
    if counts.rows_read != counts.rows_scored + counts.rows_rejected:
        raise ScoringError(
            f"internal count mismatch for '{out}': read {counts.rows_read}, "
            f"scored {counts.rows_scored}, rejected {counts.rows_rejected}"
        )
    rate = counts.rows_rejected / counts.rows_read if counts.rows_read else 0.0
    if counts.rows_rejected:
        os.replace(partials.rejects, rejects_final)
    else:
        partials.rejects.unlink(missing_ok=True)
        rejects_final.unlink(missing_ok=True)
    if rate > opts.max_error_rate:
        partials.out.unlink(missing_ok=True)
        partials.checkpoint.unlink(missing_ok=True)
        shutil.rmtree(partials.parts, ignore_errors=True)
        raise ScoringError(
            f"{counts.rows_rejected} of {counts.rows_read} rows rejected "
            f"({rate:.2%}) exceeds --max-error-rate {opts.max_error_rate:g}; "
            f"no output written, see {rejects_final}"
        )
    os.replace(partials.out, out)
    partials.checkpoint.unlink(missing_ok=True)
    shutil.rmtree(partials.parts, ignore_errors=True)


def rejects_path(out: Path) -> Path:
    return out.with_name(out.name + ".rejects.csv")
