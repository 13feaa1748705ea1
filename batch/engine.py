"""The local batch scoring engine: streaming, parallel, bounded memory, nothing lost.

Owns :func:`score`: resolve a model URI in a workspace, stream CSV/Parquet inputs in chunks
through ``--workers`` processes that each load the model once (or, for skops scikit-learn
models with an all-numeric signature, ``--workers`` threads in this process on the lean path
of :mod:`batch.fastpath`, checked against ``pyfunc.predict``), write predictions in input
order to a temp file renamed into place at the end (a failed run leaves no output), write
rejected rows with their reason to ``<output>.rejects.csv``, checkpoint every half second so
a killed run resumes to byte-identical output, write a manifest beside the output, and record
the run (and a ``batch`` deployment) in the model's workspace.

Counts always reconcile: rows read = rows scored + rows rejected.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
import platform
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batch.fastpath import LeanDisagreement, LeanPredictor, plan_lean
from batch.readers import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    InputFile,
    RawBlock,
    block_bytes_for,
    expand_inputs,
    iter_chunks,
    iter_csv_blocks,
    parse_block,
    read_columns,
)
from batch.schema import (
    InputSchema,
    check_columns,
    coerce,
    coerce_matrix,
    input_schema_of,
    raw_text,
)
from lifecycle.base.errors import InvalidArgumentError, ScoringError
from lifecycle.base.fetch import ModelFetch
from lifecycle.base.tags import (
    ENGINE_TAG,
    MODEL_NAME_TAG,
    MODEL_URI_TAG,
    MODEL_VERSION_TAG,
    RUN_KIND_TAG,
)
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

FORMATS = ("csv", "parquet")
ENGINES = ("local", "spark")
REJECTS_HEADER = ["source_file", "row_number", "raw_text", "reason"]
SOURCE_COLUMNS = ["source_file", "source_row"]
EXPERIMENT = "batch-scoring"
CHECKPOINT_VERSION = 1
#: Seconds between checkpoints (each flushes the output and writes a JSON file; a resumed
#: run redoes at most this much work).
CHECKPOINT_EVERY_S = 0.5

ProgressCallback = Callable[[dict[str, Any]], None]


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


@dataclass
class _Counts:
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    chunks: int = 0


@dataclass
class _ChunkResult:
    seq: int
    file_index: int
    last_of_file: bool
    rows: int  # parsed data rows of the chunk (malformed records not included)
    relative: bool  # row numbers count from the chunk's start (CSV blocks), not the file's
    end_offset: int | None  # CSV: byte offset after the block (resume point)
    columns: list[str]
    body: bytes | None
    lines: pa.Array | None
    ok_rows: np.ndarray | None
    table: pa.Table | None
    rejects: list[list[Any]]
    read: int
    scored: int


# ---------------------------------------------------------------------------------------------
# public entry point


def score(
    ws: Workspace,
    model_uri: str,
    inputs: str | os.PathLike[str] | list[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    keep_columns: list[str] | None = None,
    keep_all: bool = False,
    workers: int | None = None,
    chunk_rows: int | None = None,
    max_error_rate: float = 0.0,
    delimiter: str = ",",
    engine: str = "local",
    resume: bool = True,
    master: str | None = None,
    progress: ProgressCallback | None = None,
    record: bool = True,
) -> Manifest:
    """Score ``inputs`` with the model at ``model_uri`` (resolved in ``ws``) into ``output``.

    Args:
        ws: the workspace the model URI resolves in; the run is recorded there.
        model_uri: ``models:/NAME/VERSION|STAGE|latest``, ``models:/NAME@ALIAS`` or a local
            MLflow model directory.
        inputs: CSV/Parquet files, folders or globs (one or a list).
        output: a file (one combined output) or an existing folder / a path ending in ``/``
            (one output per input, named after the input).
        fmt: ``csv`` or ``parquet`` (default: from the output's extension, else csv).
        keep_columns: input columns copied to the output before the predictions.
        keep_all: copy every input column.
        workers: scoring processes (default: all cores); 1 scores in this process. On the
            lean path (skops scikit-learn model, all-numeric signature) these are threads
            of this process instead.
        chunk_rows: rows per chunk (default 20,000).
        max_error_rate: the fraction of rejected rows above which the run fails.
        delimiter: the CSV field delimiter.
        engine: ``local`` or ``spark``.
        resume: continue from a checkpoint left by a killed run with the same arguments.
        master: the Spark master URL (engine ``spark``).
        progress: called after every chunk with a dict (rows_read, rows_per_s, fraction).
        record: record the run and a ``batch`` deployment in ``ws``.

    Returns:
        The run's :class:`Manifest` (also written beside the output).

    Raises:
        InvalidArgumentError: an option is out of range.
        SchemaError: an input lacks a signature column (names missing and extra columns).
        ScoringError: an input cannot be read, or rejected rows exceed ``max_error_rate``.
    """
    from lifecycle.base.audit import utcnow

    started = time.time()
    started_at = utcnow()
    if engine not in ENGINES:
        raise InvalidArgumentError(
            f"Invalid engine '{engine}'. Value must be one of {', '.join(ENGINES)}"
        )
    if not 0.0 <= float(max_error_rate) <= 1.0:
        raise InvalidArgumentError(
            f"Invalid max error rate {max_error_rate}: expected a fraction in [0, 1]"
        )
    if len(delimiter) != 1:
        raise InvalidArgumentError(f"Invalid delimiter {delimiter!r}: expected one character")
    n_workers = int(workers) if workers else (os.cpu_count() or 1)
    if n_workers < 1:
        raise InvalidArgumentError(f"Invalid workers {workers}: expected 1 or more")
    rows_per_chunk = int(chunk_rows) if chunk_rows else DEFAULT_CHUNK_ROWS
    if rows_per_chunk < 1:
        raise InvalidArgumentError(f"Invalid chunk rows {chunk_rows}: expected 1 or more")

    files = expand_inputs(inputs)
    jobs = _plan_outputs(files, Path(output), fmt)
    out_fmt = _output_format(Path(output), fmt, per_input=len(jobs) > 1 or _is_dir_target(output))

    counts_total = _Counts()
    outputs: list[dict[str, Any]] = []
    resumed = False
    pool: _WorkerPool | None = None
    lean: LeanPredictor | None = None
    fast_path: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        # The model's libraries are not imported while a child resolves: the two processes'
        # modules side by side (~500 MB) would outweigh the scoring itself.
        fetch = stack.enter_context(ModelFetch(ws, str(model_uri)))
        fetched = fetch.result()
        resolved, model_dir = fetched.resolved, fetched.path
        keep = _check_inputs(files, delimiter, keep_columns, keep_all)
        schema = input_schema_of(model_dir)
        for f in files:
            check_columns(schema, read_columns(f, delimiter), str(f.path))
        if engine == "local":
            plan = plan_lean(model_dir, schema)
            fast_path = {"kind": "sklearn-matrix", "used": plan.eligible, "reason": plan.reason}
            if plan.eligible:
                lean = LeanPredictor(model_dir, schema, plan)
                stack.callback(lean.close)
            # Workers are forked before any other thread starts (fork + threads = deadlocks);
            # the lean path uses threads of this process.
            pool = stack.enter_context(_WorkerPool(model_dir, n_workers, threads=lean is not None))
        if lean is not None:
            # MLflow is not imported while the lean path scores (it is ~110 MB and seconds
            # of GIL-bound imports): the run is recorded, and the lean path checked against
            # pyfunc, after the last chunk. Arrow's system allocator gives freed blocks back.
            stack.enter_context(_scoring_memory_pool())
            stack.enter_context(_quick_gil_handoffs())
            lean.wait_loaded()
            _freeze_gc()
        fingerprint_base = {
            "model": resolved.pinned_uri,
            "workspace": ws.name,
            "keep": keep,
            "chunk_rows": rows_per_chunk,
            "delimiter": delimiter,
            "format": out_fmt,
            "engine": engine,
        }
        for out_path, job_files in jobs:
            opts = _JobOptions(
                model_dir=model_dir,
                schema=schema,
                keep=keep,
                source_columns=len(job_files) > 1,
                fmt=out_fmt,
                chunk_rows=rows_per_chunk,
                delimiter=delimiter,
                max_error_rate=float(max_error_rate),
                lean=lean,
            )
            if engine == "spark":
                from batch.spark import score_files_spark

                counts, was_resumed = score_files_spark(
                    model_dir, job_files, out_path, opts, master, resume, fingerprint_base, progress
                )
            else:
                assert pool is not None
                try:
                    counts, was_resumed = _score_job(
                        job_files, out_path, opts, pool, resume, fingerprint_base, progress
                    )
                except LeanDisagreement as exc:
                    assert lean is not None
                    logger.warning(
                        "the lean path disagreed with pyfunc.predict (%s): rescoring %s "
                        "through pyfunc",
                        exc,
                        out_path,
                    )
                    lean.record_verdict()
                    fast_path = {"kind": "sklearn-matrix", "used": False, "reason": str(exc)}
                    lean = None
                    opts = replace(opts, lean=None)
                    counts, was_resumed = _score_job(
                        job_files, out_path, opts, pool, False, fingerprint_base, progress
                    )
            resumed = resumed or was_resumed
            for k in ("rows_read", "rows_scored", "rows_rejected", "chunks"):
                setattr(counts_total, k, getattr(counts_total, k) + getattr(counts, k))
            outputs.append(
                {
                    "path": str(out_path),
                    "inputs": [str(f.path) for f in job_files],
                    "rejects": str(_rejects_path(out_path)) if counts.rows_rejected else None,
                    **asdict(counts),
                }
            )
    if lean is not None and fast_path is not None:
        lean.record_verdict()
        fast_path["verified"] = "cached verdict" if not lean.verify else "pyfunc.predict"
        fast_path["rows_checked"] = lean.rows_checked
    duration = time.time() - started
    # The inputs' digests are computed now, beside MLflow's import for the run record (one
    # thread each: hashing releases the GIL, importing holds it), not during the scoring.
    background = cf.ThreadPoolExecutor(max_workers=2)
    digest_futures = {f.path: background.submit(_sha256, f.path) for f in files}
    run_store = _open_run_store(ws) if record else None
    manifest = Manifest(
        model_uri=str(model_uri),
        model_name=resolved.name,
        model_version=resolved.version,
        workspace=ws.name,
        engine=engine,
        inputs=[
            {"path": str(f.path), "size": f.size, "sha256": digest_futures[f.path].result()}
            for f in files
        ],
        outputs=outputs,
        rows_read=counts_total.rows_read,
        rows_scored=counts_total.rows_scored,
        rows_rejected=counts_total.rows_rejected,
        chunks=counts_total.chunks,
        chunk_rows=rows_per_chunk,
        workers=n_workers if engine == "local" else 0,
        duration_s=round(duration, 3),
        rows_per_s=round(counts_total.rows_read / duration, 1) if duration > 0 else 0.0,
        resumed=resumed,
        started_at=started_at,
        finished_at=utcnow(),
        packages=_package_versions(),
        fast_path=fast_path,
    )
    manifest_path = _manifest_path(Path(output), jobs)
    manifest.manifest_path = str(manifest_path)
    background.shutdown()
    if run_store is not None:
        with _no_gc():
            manifest.run_id = _record_run(
                ws, run_store, resolved, str(model_uri), manifest, manifest_path, started
            )
    _atomic_write_text(manifest_path, json.dumps(manifest.to_dict(), indent=2, default=str))
    logger.info(
        "scored %d of %d rows (%d rejected) in %.1f s",
        manifest.rows_scored,
        manifest.rows_read,
        manifest.rows_rejected,
        duration,
    )
    return manifest


# ---------------------------------------------------------------------------------------------
# planning


def _is_dir_target(output: str | os.PathLike[str]) -> bool:
    text = str(output)
    return Path(text).is_dir() or text.endswith(("/", os.sep))


def _output_format(output: Path, fmt: str | None, per_input: bool) -> str:
    if fmt:
        if fmt.lower() not in FORMATS:
            raise InvalidArgumentError(
                f"Invalid format '{fmt}'. Value must be one of {', '.join(FORMATS)}"
            )
        return fmt.lower()
    if not per_input and output.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    return "csv"


def _plan_outputs(
    files: list[InputFile], output: Path, fmt: str | None
) -> list[tuple[Path, list[InputFile]]]:
    """(output path, inputs) pairs: one per input into a folder, or one combined file."""
    if _is_dir_target(output):
        output.mkdir(parents=True, exist_ok=True)
        ext = ".parquet" if (fmt or "").lower() == "parquet" else ".csv"
        names = [f.path.stem for f in files]
        jobs = []
        for f, stem in zip(files, names, strict=True):
            name = stem if names.count(stem) == 1 else f"{stem}-{f.fmt}"
            jobs.append((output / f"{name}.scored{ext}", [f]))
        return jobs
    if not output.parent.exists():
        raise ScoringError(f"Output folder '{output.parent}' does not exist")
    resolved_inputs = {f.path for f in files}
    if output.resolve() in resolved_inputs:
        raise InvalidArgumentError(f"Output '{output}' is also an input")
    return [(output, files)]


def _check_inputs(
    files: list[InputFile], delimiter: str, keep_columns: list[str] | None, keep_all: bool
) -> list[str] | None:
    """The passthrough columns (None: all of them) after checking they exist in every input."""
    if keep_all:
        return None
    keep = [c for c in (keep_columns or []) if c]
    for f in files:
        names = read_columns(f, delimiter)
        missing = [c for c in keep if c not in names]
        if missing:
            raise InvalidArgumentError(
                f"--keep-columns names column(s) {missing} not in '{f.path}'. Columns: {names}"
            )
    return keep


def _rejects_path(out: Path) -> Path:
    return out.with_name(out.name + ".rejects.csv")


def _manifest_path(output: Path, jobs: list[tuple[Path, list[InputFile]]]) -> Path:
    if _is_dir_target(output):
        return output / "manifest.json"
    return output.with_name(output.name + ".manifest.json")


# ---------------------------------------------------------------------------------------------
# one output file


@dataclass(frozen=True)
class _JobOptions:
    model_dir: str
    schema: InputSchema
    keep: list[str] | None
    source_columns: bool
    fmt: str
    chunk_rows: int
    delimiter: str
    max_error_rate: float
    lean: LeanPredictor | None = field(default=None, compare=False)


@dataclass
class _Partials:
    out: Path
    rejects: Path
    checkpoint: Path
    parts: Path

    @classmethod
    def for_output(cls, out: Path) -> _Partials:
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


class _ParquetParts:
    """Parquet output as numbered part files, so a killed run can resume.

    A Parquet file is only readable once its footer is written, so the output is streamed
    into parts instead: each chunk is one row group, a part is sealed (closed) at every
    checkpoint, and a resumed run drops the parts written after its checkpoint. At the end
    the parts' row groups are copied in order into one file, so the result does not depend
    on where the parts were cut: an interrupted and an uninterrupted run write the same bytes.
    """

    def __init__(self, folder: Path, done: int) -> None:
        import pyarrow.parquet as pq

        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.done = folder, done
        for path in folder.glob("*.parquet"):
            if int(path.stem) >= done:  # written after the checkpoint: redone
                path.unlink()
        first = self._path(0)
        self.schema: pa.Schema | None = pq.read_schema(first) if done and first.exists() else None
        self.writer: Any = None

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.parquet"

    def write(self, table: pa.Table) -> None:
        """Append ``table`` as one row group (cast to the output's schema, set by the first)."""
        import pyarrow.parquet as pq

        if self.schema is None:
            self.schema = table.schema
        if self.writer is None:
            self.writer = pq.ParquetWriter(self._path(self.done), self.schema)
        self.writer.write_table(table.cast(self.schema), row_group_size=max(1, table.num_rows))

    def seal(self) -> int:
        """Close the current part (it is then complete); the number of complete parts."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.done += 1
        return self.done

    def close(self) -> None:
        """Close an open part without counting it (after a failure)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def merge(self, out_fh: Any) -> bool:
        """Copy every part's row groups, in order, into ``out_fh``; False when there were none."""
        import pyarrow.parquet as pq

        self.seal()
        writer = None
        for index in range(self.done):
            part = pq.ParquetFile(self._path(index))
            for group in range(part.num_row_groups):
                table = part.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(out_fh, table.schema)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
            part.close()
        if writer is None:
            return False
        writer.close()
        return True


def _fingerprint(base: dict[str, Any], files: list[InputFile], out: Path) -> str:
    data = {
        **base,
        "output": str(out.resolve()),
        "inputs": [(str(f.path), f.size, f.path.stat().st_mtime_ns) for f in files],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _score_job(
    files: list[InputFile],
    out: Path,
    opts: _JobOptions,
    pool: _WorkerPool,
    resume: bool,
    fingerprint_base: dict[str, Any],
    progress: ProgressCallback | None,
) -> tuple[_Counts, bool]:
    partials, state, resumed = _open_checkpoint(out, files, fingerprint_base, opts.fmt, resume)
    if resumed:
        logger.info(
            "resuming %s at file %d row %d", out, state["file_index"], state["row_in_file"] + 1
        )
    counts = _Counts(**state["counts"])
    try:
        _run_chunks(files, out, partials, opts, pool, state, counts, progress)
    except KeyboardInterrupt:
        logger.warning("interrupted: rerun with the same arguments to resume %s", out)
        raise
    except BaseException:
        partials.remove()
        raise
    return counts, resumed


def _open_checkpoint(
    out: Path, files: list[InputFile], fingerprint_base: dict[str, Any], fmt: str, resume: bool
) -> tuple[_Partials, dict[str, Any], bool]:
    """The partial files of ``out`` and the state to continue from: the checkpoint left by a
    run with the same arguments and inputs (when ``resume``), else a fresh state with the
    partials removed. The third value says whether it resumes."""
    partials = _Partials.for_output(out)
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
        "counts": asdict(_Counts()),
    }
    return partials, fresh, False


def _load_checkpoint(partials: _Partials, fingerprint: str) -> dict[str, Any] | None:
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


def _run_chunks(
    files: list[InputFile],
    out: Path,
    partials: _Partials,
    opts: _JobOptions,
    pool: _WorkerPool,
    state: dict[str, Any],
    counts: _Counts,
    progress: ProgressCallback | None,
) -> None:
    resuming = state["out_bytes"] > 0 or state["rejects_bytes"] > 0 or state["seq"] > 0
    out_fh = open(partials.out, "r+b" if resuming else "wb")  # noqa: SIM115 - closed below
    out_fh.truncate(state["out_bytes"])
    out_fh.seek(state["out_bytes"])
    rej_fh = open(partials.rejects, "r+b" if resuming and partials.rejects.exists() else "wb")  # noqa: SIM115
    rej_fh.truncate(state["rejects_bytes"])
    rej_fh.seek(state["rejects_bytes"])
    parquet_writer = (
        _ParquetParts(partials.parts, state.get("parts", 0)) if opts.fmt == "parquet" else None
    )
    total_bytes = sum(f.size for f in files) or 1
    t0 = time.time()
    last_checkpoint = 0.0
    rows_at_start = counts.rows_read

    def chunks() -> Iterator[tuple[int, Chunk | RawBlock, bool]]:
        seq = state["seq"]
        for index in range(state["file_index"], len(files)):
            f = files[index]
            resume_here = index == state["file_index"]
            items: Iterator[Chunk | RawBlock]
            if f.fmt == "csv":
                names = read_columns(f, opts.delimiter)
                start = state.get("offset") if resume_here else None
                items = iter_csv_blocks(
                    f, index, names, block_bytes_for(f.path, opts.chunk_rows), start
                )
            else:
                skip = state["row_in_file"] if resume_here else 0
                items = iter_chunks(
                    f, index, opts.chunk_rows, opts.delimiter, _read_columns_for(f, opts), skip
                )
            for c, last in _with_last(items):
                c.seq = seq
                seq += 1
                yield seq, c, last

    executor: cf.Executor | None = pool.executor
    n_workers = pool.workers
    try:
        window: deque[cf.Future[_ChunkResult]] = deque()
        source = chunks()

        def submit_next() -> bool:
            item = next(source, None)
            if item is None:
                return False
            _seq, chunk, last = item
            if executor is None:
                fut: cf.Future[_ChunkResult] = cf.Future()
                fut.set_result(_score_chunk(chunk, last, opts))
            else:
                fut = executor.submit(_score_chunk, chunk, last, opts)
            window.append(fut)
            return True

        # Threads share one process: one chunk ready to write beyond the busy threads is
        # enough, and each chunk in flight holds its raw block, table and matrix in memory.
        depth = n_workers + 1 if pool.threads else n_workers * 2
        more = True
        while more and len(window) < max(1, depth):
            more = submit_next()
        while window:
            result = window.popleft().result()
            if more:
                more = submit_next()
            parquet_writer = _write_result(
                result,
                out_fh,
                rej_fh,
                parquet_writer,
                state,
                opts,
                counts,
                files[result.file_index].name,
            )
            if time.time() - last_checkpoint >= CHECKPOINT_EVERY_S:
                if parquet_writer is not None:
                    state["parts"] = parquet_writer.seal()
                _save_checkpoint(partials, state, out_fh, rej_fh, counts)
                last_checkpoint = time.time()
            if progress is not None:
                elapsed = max(time.time() - t0, 1e-9)
                done_bytes = sum(f.size for f in files[: result.file_index]) + (
                    files[result.file_index].size
                    if result.last_of_file
                    else (result.end_offset or 0)
                )
                progress(
                    {
                        "rows_read": counts.rows_read,
                        "rows_per_s": (counts.rows_read - rows_at_start) / elapsed,
                        "bytes_done": done_bytes,
                        "bytes_total": total_bytes,
                        "file": files[result.file_index].name,
                    }
                )
        if opts.fmt == "csv" and state["header"] is None:
            names = _default_columns(files, opts)
            out_fh.write(_header_bytes(names, opts.delimiter))
        if parquet_writer is not None and not parquet_writer.merge(out_fh):
            import pyarrow.parquet as pq

            names = _default_columns(files, opts)
            pq.write_table(pa.table({n: pa.array([], pa.string()) for n in names}), out_fh)
    finally:
        for fut in window:
            fut.cancel()
        for fut in window:  # threads may still be running a chunk: let them end first
            with contextlib.suppress(BaseException):
                fut.result()
        if parquet_writer is not None:
            parquet_writer.close()
        out_fh.close()
        rej_fh.close()
    if opts.lean is not None:
        _release_unused_memory()  # the chunks' buffers, before MLflow is imported
        with _no_gc():
            opts.lean.confirm()  # before anything is renamed into place
    _finish(out, partials, opts, counts)


@contextlib.contextmanager
def _quick_gil_handoffs(interval: float = 0.0002) -> Iterator[None]:
    """Hand the GIL over every ``interval`` seconds instead of every 5 ms, for the run.

    The scoring threads spend their time in Arrow/NumPy/scikit-learn code without the GIL
    and need it back briefly after each call; while another thread runs Python (MLflow's
    import, the run record) each of those waits lasted up to the switch interval. Measured
    here: parsing 1M rows in two threads beside a Python-bound thread took 2.5 s at 5 ms,
    1.3 s at 0.2 ms (0.9 s alone), and the Python-bound thread got no less done.
    """
    import gc
    import sys

    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
        gc.unfreeze()


@contextlib.contextmanager
def _scoring_memory_pool() -> Iterator[None]:
    """Allocate Arrow buffers with the system allocator for the run, then give memory back.

    Arrow's default (mimalloc) kept the freed blocks of every chunk in per-thread heaps:
    measured at 5M rows, the lean path peaked ~100 MB above its imports with it and ~60 MB
    with the system allocator, at the same speed.
    """
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)
        _release_unused_memory()


def _release_unused_memory() -> None:
    """Return freed heap memory to the operating system (``malloc_trim`` on glibc)."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _freeze_gc() -> None:
    """Move every object alive now (imported modules, the model) out of the collector's
    reach: full collections hold the GIL while the scoring threads wait, and walking
    MLflow's and scikit-learn's objects doubled a random forest's scoring time here."""
    import gc

    gc.freeze()


def _with_last(it: Iterator[Any]) -> Iterator[tuple[Any, bool]]:
    prev: Any = None
    for item in it:
        if prev is not None:
            yield prev, False
        prev = item
    if prev is not None:
        yield prev, True


def _read_columns_for(f: InputFile, opts: _JobOptions) -> list[str] | None:
    if opts.keep is None:
        return None
    names = read_columns(f, opts.delimiter)
    wanted = set(opts.schema.names) | set(opts.keep)
    if f.fmt == "parquet":
        return [n for n in names if n in wanted]
    # CSV keeps every column: a rejected row's raw text is the whole record.
    return None


def _typed_columns(opts: _JobOptions) -> dict[str, pa.DataType]:
    """Signature columns Arrow may parse straight to their type (numbers not passed through:
    passthrough columns keep their text exactly as read)."""
    arrow = {
        "double": pa.float64(),
        "float": pa.float32(),
        "long": pa.int64(),
        "integer": pa.int32(),
    }
    kept = set(opts.keep) if opts.keep is not None else None
    out = {}
    for spec in opts.schema.columns or ():
        if spec.type in arrow and (kept is not None and spec.name not in kept):
            out[spec.name] = arrow[spec.type]
    return out


def _default_columns(files: list[InputFile], opts: _JobOptions) -> list[str]:
    keep = opts.keep if opts.keep is not None else read_columns(files[0], opts.delimiter)
    return (SOURCE_COLUMNS if opts.source_columns else []) + list(keep) + ["prediction"]


def _header_bytes(names: list[str], delimiter: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(names)
    return buf.getvalue().encode("utf-8")


def _write_result(
    result: _ChunkResult,
    out_fh: Any,
    rej_fh: Any,
    parquet_writer: Any,
    state: dict[str, Any],
    opts: _JobOptions,
    counts: _Counts,
    file_name: str,
) -> Any:
    base = state["row_in_file"] if result.relative else 0
    columns = (SOURCE_COLUMNS if opts.source_columns else []) + result.columns
    if opts.fmt == "csv":
        body = result.body
        if result.lines is not None and result.ok_rows is not None and len(result.lines):
            body = _prefixed_lines(result.lines, file_name, result.ok_rows + base, opts.delimiter)
        if body:
            if state["header"] is None:
                out_fh.write(_header_bytes(columns, opts.delimiter))
                state["header"] = columns
            out_fh.write(body)
    elif result.table is not None and result.table.num_rows:
        table = result.table
        if opts.source_columns and result.ok_rows is not None:
            table = table.add_column(
                0, "source_row", pa.array(result.ok_rows + base, pa.int64())
            ).add_column(0, "source_file", pa.array([file_name] * table.num_rows, pa.string()))
        if state["header"] is None:
            state["header"] = columns
        parquet_writer.write(table)
    if result.rejects:
        if rej_fh.tell() == 0:
            rej_fh.write(_header_bytes(REJECTS_HEADER, ","))
        rows = [
            [r[0], "" if r[1] is None else str(int(r[1]) + base), r[2], r[3]]
            for r in result.rejects
        ]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        rej_fh.write(buf.getvalue().encode("utf-8"))
    counts.rows_read += result.read
    counts.rows_scored += result.scored
    counts.rows_rejected += len(result.rejects)
    counts.chunks += 1
    state["seq"] = result.seq + 1
    if result.last_of_file:
        state["file_index"] = result.file_index + 1
        state["row_in_file"] = 0
        state["offset"] = None
    else:
        state["file_index"] = result.file_index
        state["row_in_file"] += result.rows
        state["offset"] = result.end_offset
    return parquet_writer


def _prefixed_lines(lines: pa.Array, file_name: str, rows: np.ndarray, delimiter: str) -> bytes:
    """CSV lines with ``source_file`` and ``source_row`` put in front."""
    import pyarrow.compute as pc

    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="").writerow([file_name])
    name = buf.getvalue()
    rows_text = pc.cast(pa.array(rows, pa.int64()), pa.string())
    joined = pc.binary_join_element_wise(name, rows_text, lines, delimiter)
    return _join_lines(joined)


def _save_checkpoint(
    partials: _Partials, state: dict[str, Any], out_fh: Any, rej_fh: Any, counts: _Counts
) -> None:
    out_fh.flush()
    rej_fh.flush()
    state["out_bytes"] = out_fh.tell()
    state["rejects_bytes"] = rej_fh.tell()
    state["counts"] = asdict(counts)
    _atomic_write_text(partials.checkpoint, json.dumps(state))


def _finish(out: Path, partials: _Partials, opts: _JobOptions, counts: _Counts) -> None:
    rejects_final = _rejects_path(out)
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


# ---------------------------------------------------------------------------------------------
# worker side

_WORKER: dict[str, Any] = {}
_WORKER_LOCK = threading.Lock()


def _load_model(model_dir: str) -> None:
    """Load the model once per process (before forking, the workers inherit it)."""
    import warnings

    import mlflow.pyfunc

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with _WORKER_LOCK:  # scoring threads may ask at the same time
        if _WORKER.get("model_dir") != model_dir:
            _WORKER["model"] = mlflow.pyfunc.load_model(model_dir)
            _WORKER["model_dir"] = model_dir


def _ready(_: int = 0) -> int:
    return os.getpid()


class _WorkerPool:
    """``workers`` processes that each hold the loaded model; none when workers is 1.

    On Linux the model is loaded here first and the workers are forked from this process,
    so they start instantly and share the model's memory pages; elsewhere each worker
    (forkserver/spawn) loads it once. With ``threads`` (the lean path) they are threads of
    this process instead: Arrow parsing, NumPy and scikit-learn's predict release the GIL,
    and nothing is pickled between processes.
    """

    def __init__(self, model_dir: str, workers: int, threads: bool = False) -> None:
        self.model_dir = model_dir
        self.workers = workers
        self.threads = threads
        self.executor: cf.Executor | None = None

    def __enter__(self) -> _WorkerPool:
        if self.threads:
            self.executor = cf.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="score"
            )
            return self
        if self.workers == 1:
            _load_model(self.model_dir)
            return self
        if "fork" in multiprocessing.get_all_start_methods():
            import gc

            _load_model(self.model_dir)
            # Objects moved to the permanent generation are never scanned by the workers'
            # collector, so their memory pages stay shared instead of being copied.
            gc.collect()
            gc.freeze()
            self.executor = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("fork")
            )
        else:
            self.executor = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_load_model,
                initargs=(self.model_dir,),
            )
        # Start every worker now (fork happens here, before other threads exist).
        list(self.executor.map(_ready, range(self.workers)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            if not self.threads:
                import gc

                gc.unfreeze()


def _score_chunk(chunk: Chunk | RawBlock, last_of_file: bool, opts: _JobOptions) -> _ChunkResult:
    """Parse (CSV blocks), coerce, predict and format one chunk (runs in a worker)."""
    quote_free = False
    if isinstance(chunk, RawBlock):
        table, malformed, _ = parse_block(chunk, opts.delimiter, _typed_columns(opts))
        first_row, relative, end_offset = 1, True, chunk.end
        # Without a quote in the raw bytes no value can hold a delimiter or a line break.
        quote_free = b'"' not in chunk.data
    else:
        table, malformed = chunk.table, chunk.malformed
        first_row, relative, end_offset = chunk.first_row, False, None
    n = table.num_rows
    rejects: list[list[Any]] = []
    if opts.lean is not None:
        lean = coerce_matrix(table, opts.schema)
        opts.lean.sample(table, lean.ok, chunk.file_index, chunk.seq)
        ok_idx = np.flatnonzero(lean.ok)
        reasons = dict(lean.reasons)
        try:
            preds = (
                _prediction_columns(opts.lean.predict(lean.matrix), len(lean.matrix))
                if len(lean.matrix)
                else {}
            )
            model_errors: dict[int, str] = {}
        except LeanDisagreement:
            raise
        except Exception:
            # Rows the model refuses: pyfunc decides which and why (the same rejects and
            # reasons as without the lean path, and no bisection on a path that may differ).
            if _WORKER.get("model_dir") != opts.model_dir:
                _load_model(opts.model_dir)
            frame = coerce(table, opts.schema).frame
            preds, model_errors = _predict_isolating_errors(_WORKER["model"], frame)
    else:
        if _WORKER.get("model_dir") != opts.model_dir:
            _load_model(opts.model_dir)
        coerced = coerce(table, opts.schema)
        ok_idx = np.flatnonzero(coerced.ok)
        preds, model_errors = _predict_isolating_errors(_WORKER["model"], coerced.frame)
        reasons = dict(coerced.reasons)
    if model_errors:
        bad_rows = ok_idx[list(model_errors)]
        for pos, row in zip(model_errors, bad_rows, strict=True):
            reasons[int(row)] = model_errors[pos]
        keep_pos = np.setdiff1d(np.arange(len(ok_idx)), np.asarray(list(model_errors)))
        ok_idx = ok_idx[keep_pos]
    for i in sorted(reasons):
        rejects.append(
            [chunk.file_name, first_row + i, raw_text(table, i, opts.delimiter), reasons[i]]
        )
    for m in malformed:
        rejects.append([chunk.file_name, None, m.text, m.reason])

    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    keep = opts.keep if opts.keep is not None else table.column_names
    take = pa.array(ok_idx, pa.int64())
    full = len(ok_idx) == n
    for name in keep:
        col = table.column(name)
        cols[name] = col if full else col.take(take)
    for name, values in preds.items():
        cols[name] = _to_arrow(values)
    # Output names may repeat an input name (a kept "prediction" column): keep both, suffixed.
    taken = set(SOURCE_COLUMNS) if opts.source_columns else set()
    unique = _unique_names(list(cols), taken)
    out_table = pa.table(list(cols.values()), names=unique) if cols else pa.table({})
    body = lines = None
    if opts.fmt == "csv":
        # Kept columns of a quote-free block need no quoting (predictions are checked).
        kept = set(keep) - set(preds) if quote_free else set()
        safe = {u for u, name in zip(unique, cols, strict=True) if name in kept}
        if opts.source_columns:
            lines = _render_lines(out_table, opts.delimiter, safe)
        else:
            body = _render_csv(out_table, opts.delimiter, safe)
    return _ChunkResult(
        seq=chunk.seq,
        file_index=chunk.file_index,
        last_of_file=last_of_file,
        rows=n,
        relative=relative,
        end_offset=end_offset,
        columns=unique,
        body=body,
        lines=lines,
        ok_rows=ok_idx + first_row if opts.source_columns else None,
        table=out_table if opts.fmt == "parquet" else None,
        rejects=rejects,
        read=n + len(malformed),
        scored=len(ok_idx),
    )


def _render_csv(table: pa.Table, delimiter: str, safe: set[str] | None = None) -> bytes:
    """``table`` as CSV records without a header, quoting only the values that need it."""
    if table.num_rows == 0 or table.num_columns == 0:
        return b""
    return _join_lines(_render_lines(table, delimiter, safe))


#: Characters a number rendered as text may hold: a delimiter among them forces the check.
_NUMBER_CHARS = frozenset("0123456789.+-eEinfaINFA")


def _render_lines(table: pa.Table, delimiter: str, safe: set[str] | None = None) -> pa.Array:
    """Each row of ``table`` as one CSV record (no line end).

    Arrow's own writer quotes every string; this renders each column to text with Arrow
    compute (vectorised), quotes values holding the delimiter, a quote or a line break,
    and joins the columns, so kept columns come out as they were read. Columns in ``safe``
    and numeric columns (unless the delimiter could occur in a number) skip that check.
    """
    import pyarrow.compute as pc

    if table.num_rows == 0 or table.num_columns == 0:
        return pa.array([], pa.string())
    pattern = "[" + re.escape(delimiter) + '"\\r\\n]'
    numbers_safe = delimiter not in _NUMBER_CHARS
    parts = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if name in (safe or ()) or (numeric and numbers_safe):
            parts.append(pc.fill_null(text, ""))
            continue
        needs = pc.match_substring_regex(text, pattern)
        if pc.any(needs).as_py():
            quoted = pc.binary_join_element_wise(
                '"', pc.replace_substring(text, '"', '""'), '"', ""
            )
            text = pc.if_else(needs, quoted, text)
        parts.append(pc.fill_null(text, ""))
    lines = pc.binary_join_element_wise(*parts, delimiter) if len(parts) > 1 else parts[0]
    return lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines


def _join_lines(lines: pa.Array | pa.ChunkedArray) -> bytes:
    """The records followed by a newline each, as one byte string (no Python-level loop)."""
    import pyarrow.compute as pc

    if len(lines) == 0:
        return b""
    ended = pc.binary_join_element_wise(lines, "\n", "")
    arr = ended.combine_chunks() if isinstance(ended, pa.ChunkedArray) else ended
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    return arr.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def _unique_names(names: list[str], taken: set[str] | None = None) -> list[str]:
    seen: dict[str, int] = {n: 0 for n in taken or ()}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def _to_arrow(values: Any) -> pa.Array:
    arr = np.asarray(values)
    if arr.dtype == object:
        return pa.array(list(arr), from_pandas=True)
    return pa.array(arr, from_pandas=True)


def _predict_isolating_errors(
    model: Any, frame: pd.DataFrame | np.ndarray
) -> tuple[dict[str, Any], dict[int, str]]:
    """Predict ``frame``; when the model fails, bisect to reject only the rows that fail alone.

    ``frame`` is a DataFrame (pyfunc) or a NumPy matrix (the lean path).

    Returns:
        (output column -> values for the rows that scored, frame position -> error reason).
    """
    if len(frame) == 0:
        return {}, {}
    try:
        return _prediction_columns(model.predict(frame), len(frame)), {}
    except Exception as exc:
        if len(frame) == 1:
            return {}, {
                0: "model error: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            }
    mid = len(frame) // 2
    if isinstance(frame, np.ndarray):
        head, tail = frame[:mid], frame[mid:]
    else:
        head, tail = (
            frame.iloc[:mid].reset_index(drop=True),
            frame.iloc[mid:].reset_index(drop=True),
        )
    left, lerr = _predict_isolating_errors(model, head)
    right, rerr = _predict_isolating_errors(model, tail)
    errors = {**lerr, **{mid + k: v for k, v in rerr.items()}}
    merged: dict[str, Any] = {}
    for name in list(left) + [k for k in right if k not in left]:
        parts = [p[name] for p in (left, right) if name in p]
        merged[name] = np.concatenate([np.asarray(p) for p in parts])
    return merged, errors


def _prediction_columns(pred: Any, n: int) -> dict[str, Any]:
    """The model's output as named columns: its own for a DataFrame, else ``prediction``."""
    if isinstance(pred, pd.DataFrame):
        return {str(c): pred[c].to_numpy() for c in pred.columns}
    if isinstance(pred, pd.Series):
        return {"prediction": pred.to_numpy()}
    if isinstance(pred, dict):
        return {str(k): np.asarray(v) for k, v in pred.items()}
    arr = np.asarray(pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        if len(arr) != n:
            raise ScoringError(f"model returned {len(arr)} predictions for {n} rows")
        return {"prediction": arr}
    if arr.ndim == 2:
        return {f"prediction_{i}": arr[:, i] for i in range(arr.shape[1])}
    return {"prediction": [json.dumps(x.tolist()) for x in arr]}


# ---------------------------------------------------------------------------------------------
# model, manifest, run record


def _sha256(path: Path) -> str:
    from lifecycle.base.digest import sha256_file

    return "sha256:" + sha256_file(path)


def _package_versions() -> dict[str, str]:
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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block (MLflow's import: measured 3.8 s with
    collections walking scikit-learn's and pandas' objects, 2.4-2.9 s without)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class _RunStore:
    """The MLflow client and experiment a run is recorded in, or why they are unusable."""

    client: Any = None
    experiment_id: str | None = None
    error: Exception | None = None


def _open_run_store(ws: Workspace) -> _RunStore:
    """Import MLflow and open ``ws``'s tracking store and the batch-scoring experiment."""
    from lifecycle.base.workspaces import get_or_create_experiment

    try:
        with _no_gc():
            client = ws.client()
            return _RunStore(client, get_or_create_experiment(ws, EXPERIMENT))
    except Exception as exc:  # reported by _record_run
        return _RunStore(error=exc)


def _record_run(
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
