"""The worker pool of the local engine: ``--workers`` processes (or threads on the lean\npath) that each load the model once and score chunks: coerce to the signature, predict,\nrender the output, collect rejects."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from batch.fastpath import LeanDisagreement, LeanPredictor
from batch.output import SOURCE_COLUMNS, render_csv, render_lines, unique_names
from batch.predict import predict_isolating_errors, prediction_columns, to_arrow
from batch.readers import (
    Chunk,
    RawBlock,
    parse_block,
)
from batch.schema import (
    InputSchema,
    coerce,
    coerce_matrix,
    raw_text,
)
from lifecycle.base.envs import choose_env_manager
from lifecycle.base.loader import ENV_MANAGER_VAR, load_pyfunc
from lifecycle.base.typemaps import NUMERIC_TYPES, arrow_types


@dataclass
class ChunkResult:
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


_WORKER: dict[str, Any] = {}


_WORKER_LOCK = threading.Lock()


def _load_model(model_dir: str, env_workers: int = 1) -> None:
    """Load the model once per process (before forking, the workers inherit it); a model in
    its own environment gets ``env_workers`` workers there."""
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    with _WORKER_LOCK:  # scoring threads may ask at the same time
        if _WORKER.get("model_dir") != model_dir:
            _WORKER["model"] = load_pyfunc(model_dir, env_workers=env_workers)
            _WORKER["model_dir"] = model_dir


def _ready(_: int = 0) -> int:
    return os.getpid()


class WorkerPool:
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

    def __enter__(self) -> WorkerPool:
        if not self.threads and choose_env_manager(
            self.model_dir, os.environ.get(ENV_MANAGER_VAR) or "auto"
        ):
            # The model runs in its own environment: its workers are the processes; the
            # chunks go to them from threads of this process (nothing forked, one copy of
            # the toolkit's modules), one worker per thread.
            _load_model(self.model_dir, env_workers=self.workers)
            self.threads = True
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


def score_chunk(chunk: Chunk | RawBlock, last_of_file: bool, opts: JobOptions) -> ChunkResult:
    """Parse (CSV blocks), coerce, predict and format one chunk (runs in a worker)."""
    quote_free = False
    if isinstance(chunk, RawBlock):
        table, malformed, _ = parse_block(chunk, opts.delimiter, typed_columns(opts))
        first_row, relative, end_offset = 1, True, chunk.end
        # Without a quote in the raw bytes no value can hold a delimiter or a line break.
        quote_free = b'"' not in chunk.data
    else:
        table, malformed = chunk.table, chunk.malformed
        first_row, relative, end_offset = chunk.first_row, chunk.relative, None
    n = table.num_rows
    if opts.lean is not None:
        lean = coerce_matrix(table, opts.schema)
        opts.lean.sample(table, lean.ok, chunk.file_index, chunk.seq)
        ok_idx = np.flatnonzero(lean.ok)
        reasons = dict(lean.reasons)
        try:
            preds = (
                prediction_columns(opts.lean.predict(lean.matrix), len(lean.matrix))
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
            preds, model_errors = predict_isolating_errors(_WORKER["model"], frame)
    else:
        if _WORKER.get("model_dir") != opts.model_dir:
            _load_model(opts.model_dir)
        coerced = coerce(table, opts.schema)
        ok_idx = np.flatnonzero(coerced.ok)
        preds, model_errors = predict_isolating_errors(_WORKER["model"], coerced.frame)
        reasons = dict(coerced.reasons)
    if model_errors:
        bad_rows = ok_idx[list(model_errors)]
        for pos, row in zip(model_errors, bad_rows, strict=True):
            reasons[int(row)] = model_errors[pos]
        keep_pos = np.setdiff1d(np.arange(len(ok_idx)), np.asarray(list(model_errors)))
        ok_idx = ok_idx[keep_pos]
    # Rejects in file order: a malformed record goes before the first row parsed after it.
    keyed: list[tuple[float, list[Any]]] = [
        (i, [chunk.file_name, first_row + i, raw_text(table, i, opts.delimiter), reasons[i]])
        for i in sorted(reasons)
    ]
    for m in malformed:
        key = float("inf") if m.after_rows is None else m.after_rows - 0.5
        keyed.append((key, [chunk.file_name, None, m.text, m.reason]))
    keyed.sort(key=lambda kv: kv[0])  # stable: malformed records keep their order
    rejects = [r for _k, r in keyed]

    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    keep = opts.keep if opts.keep is not None else table.column_names
    take = pa.array(ok_idx, pa.int64())
    full = len(ok_idx) == n
    for name in keep:
        col = table.column(name)
        cols[name] = col if full else col.take(take)
    for name, values in preds.items():
        cols[name] = to_arrow(values)
    # Output names may repeat an input name (a kept "prediction" column): keep both, suffixed.
    taken = set(SOURCE_COLUMNS) if opts.source_columns else set()
    unique = unique_names(list(cols), taken)
    out_table = pa.table(list(cols.values()), names=unique) if cols else pa.table({})
    body = lines = None
    if opts.fmt == "csv":
        # Kept columns of a quote-free block need no quoting (predictions are checked).
        kept = set(keep) - set(preds) if quote_free else set()
        safe = {u for u, name in zip(unique, cols, strict=True) if name in kept}
        if opts.source_columns:
            lines = render_lines(out_table, opts.delimiter, safe)
        else:
            body = render_csv(out_table, opts.delimiter, safe)
    return ChunkResult(
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


@dataclass(frozen=True)
class JobOptions:
    model_dir: str
    schema: InputSchema
    keep: list[str] | None
    source_columns: bool
    fmt: str
    chunk_rows: int
    delimiter: str
    max_error_rate: float
    lean: LeanPredictor | None = field(default=None, compare=False)


def typed_columns(opts: JobOptions) -> dict[str, pa.DataType]:
    """Signature columns Arrow may parse straight to their type (numbers not passed through:
    passthrough columns keep their text exactly as read)."""
    arrow = {t: arrow_types()[t] for t in NUMERIC_TYPES}
    kept = set(opts.keep) if opts.keep is not None else None
    out = {}
    for spec in opts.schema.columns or ():
        if spec.type in arrow and (kept is not None and spec.name not in kept):
            out[spec.name] = arrow[spec.type]
    return out
