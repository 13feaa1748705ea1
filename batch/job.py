"""One output file of a scoring run: its inputs read in chunks (CSV blocks or Arrow\nbatches), scored in input order by the pool or the lean path, written through partial\nfiles and checkpointed, so a killed run resumes to byte-identical output."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import io
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from batch.checkpoint import (
    CHECKPOINT_EVERY_S,
    Counts,
    Partials,
    finish,
    open_checkpoint,
    save_checkpoint,
)
from batch.output import REJECTS_HEADER, SOURCE_COLUMNS, ParquetParts, header_bytes, prefixed_lines
from batch.pool import ChunkResult, JobOptions, WorkerPool, score_chunk
from batch.readers import (
    Chunk,
    InputFile,
    RawBlock,
    block_bytes_for,
    iter_chunks,
    iter_csv_blocks,
    read_columns,
)
from batch.tuning import no_gc, release_unused_memory

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]


def score_job(
    files: list[InputFile],
    out: Path,
    opts: JobOptions,
    pool: WorkerPool,
    resume: bool,
    fingerprint_base: dict[str, Any],
    progress: ProgressCallback | None,
) -> tuple[Counts, bool]:
    partials, state, resumed = open_checkpoint(out, files, fingerprint_base, opts.fmt, resume)
    if resumed:
        logger.info(
            "resuming %s at file %d row %d", out, state["file_index"], state["row_in_file"] + 1
        )
    counts = Counts(**state["counts"])
    try:
        _run_chunks(files, out, partials, opts, pool, state, counts, progress)
    except KeyboardInterrupt:
        logger.warning("interrupted: rerun with the same arguments to resume %s", out)
        raise
    except BaseException:
        partials.remove()
        raise
    return counts, resumed


def _run_chunks(
    files: list[InputFile],
    out: Path,
    partials: Partials,
    opts: JobOptions,
    pool: WorkerPool,
    state: dict[str, Any],
    counts: Counts,
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
        ParquetParts(partials.parts, state.get("parts", 0)) if opts.fmt == "parquet" else None
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
                    f, index, opts.chunk_rows, opts.delimiter, read_columns_for(f, opts), skip
                )
            for c, last in _with_last(items):
                c.seq = seq
                seq += 1
                yield seq, c, last

    executor: cf.Executor | None = pool.executor
    n_workers = pool.workers
    try:
        window: deque[cf.Future[ChunkResult]] = deque()
        source = chunks()

        def submit_next() -> bool:
            item = next(source, None)
            if item is None:
                return False
            _seq, chunk, last = item
            if executor is None:
                fut: cf.Future[ChunkResult] = cf.Future()
                fut.set_result(score_chunk(chunk, last, opts))
            else:
                fut = executor.submit(score_chunk, chunk, last, opts)
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
            parquet_writer = write_result(
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
                save_checkpoint(partials, state, out_fh, rej_fh, counts)
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
            names = default_columns(files, opts)
            out_fh.write(header_bytes(names, opts.delimiter))
        if parquet_writer is not None and not parquet_writer.merge(out_fh):
            import pyarrow.parquet as pq

            names = default_columns(files, opts)
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
        release_unused_memory()  # the chunks' buffers, before MLflow is imported
        with no_gc():
            opts.lean.confirm()  # before anything is renamed into place
    finish(out, partials, opts, counts)


def _with_last(it: Iterator[Any]) -> Iterator[tuple[Any, bool]]:
    prev: Any = None
    for item in it:
        if prev is not None:
            yield prev, False
        prev = item
    if prev is not None:
        yield prev, True


def read_columns_for(f: InputFile, opts: JobOptions) -> list[str] | None:
    """The columns read from ``f`` (None: all): a Parquet file's signature and kept columns."""
    if opts.keep is None:
        return None
    names = read_columns(f, opts.delimiter)
    wanted = set(opts.schema.names) | set(opts.keep)
    if f.fmt == "parquet":
        return [n for n in names if n in wanted]
    # CSV keeps every column: a rejected row's raw text is the whole record.
    return None


def default_columns(files: list[InputFile], opts: JobOptions) -> list[str]:
    """The output's columns when no row was scored (its header must still be written)."""
    keep = opts.keep if opts.keep is not None else read_columns(files[0], opts.delimiter)
    return (SOURCE_COLUMNS if opts.source_columns else []) + list(keep) + ["prediction"]


def write_result(
    result: ChunkResult,
    out_fh: Any,
    rej_fh: Any,
    parquet_writer: Any,
    state: dict[str, Any],
    opts: JobOptions,
    counts: Counts,
    file_name: str,
) -> Any:
    """Write one chunk's result (rows, rejects, counts) in order and advance ``state``."""
    base = state["row_in_file"] if result.relative else 0
    columns = (SOURCE_COLUMNS if opts.source_columns else []) + result.columns
    if opts.fmt == "csv":
        body = result.body
        if result.lines is not None and result.ok_rows is not None and len(result.lines):
            body = prefixed_lines(result.lines, file_name, result.ok_rows + base, opts.delimiter)
        if body:
            if state["header"] is None:
                out_fh.write(header_bytes(columns, opts.delimiter))
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
            rej_fh.write(header_bytes(REJECTS_HEADER, ","))
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
