"""The Spark engine of batch scoring: the same outputs, rejects and counts as the local engine,
with the scoring done on Spark's executors.

Owns: the Spark session (``--master``, default ``local[*]``; its scratch folder, removed at
exit and by the next run when a run was killed), shipping the model to executors as one
archive (``SparkContext.addFile`` of a zip: a cluster master refuses folders, and executors
on other hosts cannot open the driver's paths), reading inputs through Spark (CSV as text
with malformed records captured, Parquet as stored) and scoring each Arrow batch on the
executors with the local engine's own code (:func:`batch.pool.score_chunk`: the same
coercion, the same bisection of rows the model refuses, the same rendering), so results are
identical by construction and a row the model rejects never fails a task (no retries spent).
Executors send back encoded chunk results; the driver writes them in input order through the
local engine's writer (temp files renamed into place, ``<output>.rejects.csv``, a checkpoint
after every input file).
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from batch.checkpoint import Counts, finish, open_checkpoint, save_checkpoint
from batch.job import default_columns, read_columns_for, write_result
from batch.output import ParquetParts, header_bytes
from batch.pool import ChunkResult, JobOptions, score_chunk
from batch.readers import Chunk, InputFile, MalformedRecord, read_columns
from lifecycle.base.errors import ScoringError
from lifecycle.base.loader import ENV_MANAGER_VAR

logger = logging.getLogger(__name__)

_CORRUPT = "_lifecycle_corrupt_record"
_SESSION_PREFIX = "lifecycle-spark-"
#: Environment variables the executors' Python workers need to see as the driver does.
_EXECUTOR_ENV = (ENV_MANAGER_VAR, "LIFECYCLE_ENV_CACHE", "LIFECYCLE_HOME")
_RESULT_SCHEMA = "meta string, body binary, lines binary, ok_rows binary, tbl binary"
_RESULT_ARROW = pa.schema(
    [("meta", pa.string())] + [(n, pa.binary()) for n in ("body", "lines", "ok_rows", "tbl")]
)


def check_java() -> str:
    """The path of ``java``.

    Raises:
        ScoringError: Java is not installed (Spark needs Java 17).
    """
    java = shutil.which("java")
    if java is None:
        raise ScoringError(
            "The Spark engine needs Java 17: no 'java' on PATH (install openjdk-17-jre-headless "
            "or set JAVA_HOME and PATH)"
        )
    return java


def is_local_master(master: str | None) -> bool:
    """Whether ``master`` runs executors in this process (``local``, ``local[N]``...)."""
    return master is None or master == "local" or master.startswith("local[")


def session_dir() -> Path:
    """This process's scratch folder for Spark (its local dir and the model archives).

    Removed when the process exits; a folder left by a killed process is removed by the
    next run (:func:`clean_stale_session_dirs`).
    """
    path = Path(tempfile.gettempdir()) / f"{_SESSION_PREFIX}{os.getpid()}"
    if not path.is_dir():
        clean_stale_session_dirs()
        path.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, path, True)
    return path


def clean_stale_session_dirs(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of Spark runs whose process is gone; returns them."""
    removed = []
    base = root or Path(tempfile.gettempdir())
    for path in base.glob(f"{_SESSION_PREFIX}*"):
        pid_text = path.name[len(_SESSION_PREFIX) :]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        logger.info("removed %s, left by a Spark run that was killed", path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def get_spark(master: str | None = None) -> Any:
    """A SparkSession whose Python workers run this interpreter (``PYSPARK_PYTHON``).

    Without ``master``: the session already active in this process (a notebook's, a
    platform's), else the master ``spark-submit`` was given, else ``local[*]``.

    Raises:
        ScoringError: pyspark or Java is missing.
    """
    check_java()
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ScoringError(
            "The Spark engine needs pyspark: pip install 'mlflow-lifecycle[spark]'"
        ) from exc
    if master is None:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("lifecycle-score")
    if master is not None or "PYSPARK_GATEWAY_PORT" not in os.environ:  # not spark-submit's
        builder = builder.master(master or "local[*]")
    builder = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.local.dir", str(session_dir()))
    )
    for name in _EXECUTOR_ENV:
        if os.environ.get(name):
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def ship_model(spark: Any, model_dir: str) -> str:
    """Zip ``model_dir`` into the session's scratch folder and add it to the Spark context;
    returns the archive's name (what executors ask ``SparkFiles`` for)."""
    name = f"lifecycle-model-{uuid.uuid4().hex[:16]}.zip"
    archive = session_dir() / name
    root = Path(model_dir)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(root).as_posix())
    spark.sparkContext.addFile(str(archive))
    logger.info("model shipped to executors as %s (%d bytes)", name, archive.stat().st_size)
    return name


def executor_model_dir(archive_name: str) -> str:
    """The model's folder on this executor: the shipped archive, extracted once per executor
    (Python workers of one executor race safely: each extracts aside, one rename wins)."""
    from pyspark import SparkFiles

    archive = Path(SparkFiles.get(archive_name))
    target = archive.with_name(archive.stem + ".model")
    if not target.is_dir():
        part = Path(tempfile.mkdtemp(prefix=archive.stem + ".part-", dir=archive.parent))
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(part)
        try:
            os.rename(part, target)
        except OSError:  # another worker of this executor was first
            shutil.rmtree(part, ignore_errors=True)
    return str(target)


def read_input(spark: Any, f: InputFile, names: list[str], opts: JobOptions) -> Any:
    """The input as a DataFrame: a CSV's columns as text plus the malformed-record column
    (one partition per file: records may hold line breaks), a Parquet file as stored."""
    from pyspark.sql import types as T

    where = f.where
    if f.fmt == "parquet":
        df = spark.read.parquet(where)
        # As the local engine: only the signature's and the kept columns of a Parquet file.
        wanted = read_columns_for(f, opts)
        return df if wanted is None else df.select(*[f"`{n}`" for n in wanted])
    schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names]
        + [T.StructField(_CORRUPT, T.StringType())]
    )
    return spark.read.csv(
        where,
        schema=schema,
        header=True,
        sep=opts.delimiter,
        multiLine=True,
        quote='"',
        escape='"',
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=_CORRUPT,
        encoding="UTF-8",
    )


def score_files_spark(
    model_dir: str,
    files: list[InputFile],
    out: Path,
    opts: Any,
    master: str | None = None,
    resume: bool = True,
    fingerprint_base: dict[str, Any] | None = None,
    progress: Any = None,
) -> tuple[Any, bool]:
    """Score ``files`` into ``out`` on Spark; same layout and guarantees as the local engine.

    A checkpoint is written after each input file: a run killed (or interrupted) and rerun
    with the same arguments skips the files already scored and produces the same bytes as
    an uninterrupted run. The file being scored when the run stopped is scored again.
    ``progress`` is called after each input file (the local engine's keys).

    Returns:
        The run's counts (``rows_read``, ``rows_scored``, ``rows_rejected``, ``chunks``) and
        whether it resumed from a checkpoint.

    Raises:
        ScoringError: Spark or Java is missing, scoring fails on an executor (the root cause
            in one line), or rejected rows exceed the allowed rate (no output is left behind).
    """
    spark = get_spark(master)
    base = {**(fingerprint_base or {}), "engine": "spark"}
    partials, state, resumed = open_checkpoint(out, files, base, opts.fmt, resume)
    if resumed:
        logger.info("resuming %s on Spark at input file %d", out, state["file_index"] + 1)
    counts = Counts(**state["counts"])
    try:
        archive = ship_model(spark, model_dir)
        _score_on_spark(spark, archive, files, partials, opts, counts, state, progress)
    except KeyboardInterrupt:
        logger.warning("interrupted: rerun with the same arguments to resume %s", out)
        raise
    except BaseException as exc:
        partials.remove()
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            raise ScoringError(f"Spark scoring of '{out}' failed: {root_cause(exc)}") from exc
        raise
    finish(out, partials, opts, counts)
    return counts, resumed


def _score_on_spark(
    spark: Any,
    archive: str,
    files: list[InputFile],
    partials: Any,
    opts: JobOptions,
    counts: Counts,
    state: dict[str, Any],
    progress: Any = None,
) -> None:
    # One executor batch is one chunk of the local engine.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(opts.chunk_rows))
    resuming = state["file_index"] > 0
    started, rows_at_start = time.time(), counts.rows_read
    # Parquet goes into part files (one per input file) merged at the end, as in the local
    # engine: a Parquet file is unreadable until its footer, so it cannot be resumed.
    writer = ParquetParts(partials.parts, state["parts"]) if opts.fmt == "parquet" else None
    with (
        open(partials.out, "r+b" if resuming else "wb") as out_fh,
        open(partials.rejects, "r+b" if resuming and partials.rejects.exists() else "wb") as rej_fh,
    ):
        for fh, key in ((out_fh, "out_bytes"), (rej_fh, "rejects_bytes")):
            fh.truncate(state[key])
            fh.seek(state[key])
        for index in range(state["file_index"], len(files)):
            f = files[index]
            names = read_columns(f, opts.delimiter)
            df = read_input(spark, f, names, opts)
            scorer = _make_scorer(archive, opts, index, f.name, f.fmt == "csv", opts.delimiter)
            results = df.mapInArrow(scorer, _RESULT_SCHEMA)
            state["row_in_file"] = 0
            seq = state["seq"]
            for row in results.toLocalIterator(prefetchPartitions=True):
                result = decode_result(row, seq, index)
                writer = write_result(result, out_fh, rej_fh, writer, state, opts, counts, f.name)
                seq += 1
            state.update(file_index=index + 1, row_in_file=0, offset=None, seq=seq)
            if writer is not None:
                state["parts"] = writer.seal()
            save_checkpoint(partials, state, out_fh, rej_fh, counts)
            if progress is not None:
                elapsed = max(time.time() - started, 1e-9)
                progress(
                    {
                        "rows_read": counts.rows_read,
                        "rows_per_s": (counts.rows_read - rows_at_start) / elapsed,
                        "bytes_done": sum(g.size for g in files[: index + 1]),
                        "bytes_total": sum(g.size for g in files) or 1,
                        "file": f.name,
                    }
                )
        if opts.fmt == "csv" and state["header"] is None:
            out_fh.write(header_bytes(default_columns(files, opts), opts.delimiter))
        if writer is not None and not writer.merge(out_fh):
            import pyarrow.parquet as pq

            names = default_columns(files, opts)
            pq.write_table(pa.table({n: pa.array([], pa.string()) for n in names}), out_fh)
        if writer is not None:
            writer.close()


def _make_scorer(
    archive: str, opts: JobOptions, file_index: int, file_name: str, is_csv: bool, delimiter: str
) -> Any:
    """The function each executor runs on its batches (``mapInArrow``)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        try:
            local = replace(opts, model_dir=executor_model_dir(archive), lean=None)
            for batch in batches:
                chunk = chunk_of(batch, file_index, file_name, is_csv, delimiter)
                yield encode_result(score_chunk(chunk, False, local))
        except Exception as exc:
            # Reported, not raised: Spark would retry the task for an error that repeats.
            yield _encode_error(exc)

    return run


def chunk_of(
    batch: pa.RecordBatch, file_index: int, file_name: str, is_csv: bool, delimiter: str
) -> Chunk:
    """A chunk of the local engine from an executor's batch: malformed CSV records taken out
    (each placed before the first row parsed after it), ``""`` and ``NA`` as missing, rows
    numbered from the batch's start."""
    import pyarrow.compute as pc

    table = pa.Table.from_batches([batch])
    malformed: list[MalformedRecord] = []
    if is_csv:
        corrupt = table.column(_CORRUPT)
        table = table.drop_columns([_CORRUPT])
        if corrupt.null_count < len(corrupt):
            mask = pc.is_valid(corrupt)
            positions = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
            texts = corrupt.filter(mask).to_pylist()
            expected = table.num_columns
            for k, (pos, text) in enumerate(zip(positions, texts, strict=True)):
                got = len(next(csv.reader([text], delimiter=delimiter), []))
                malformed.append(
                    MalformedRecord(
                        text=text.rstrip("\r\n"),
                        reason=f"malformed record: expected {expected} fields, got {got}",
                        after_rows=int(pos) - k,
                    )
                )
            table = table.filter(pc.invert(mask))
        missing = pa.array(["", "NA"])
        table = pa.table(
            [
                pc.if_else(pc.is_in(col, value_set=missing), pa.scalar(None, col.type), col)
                for col in table.columns
            ],
            names=table.column_names,
        )
    return Chunk(file_index, file_name, 1, table, malformed=malformed, relative=True)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def encode_result(result: ChunkResult) -> pa.RecordBatch:
    """A chunk's result as one row for the driver (no pickles: JSON, CSV bytes, Arrow IPC)."""
    meta = {
        "rows": result.rows,
        "read": result.read,
        "scored": result.scored,
        "columns": result.columns,
        "rejects": [
            [r[0], None if r[1] is None else int(r[1]), r[2], r[3]] for r in result.rejects
        ],
    }
    lines = b"" if result.lines is None else _ipc(pa.table({"l": result.lines}))
    ok_rows = b"" if result.ok_rows is None else np.asarray(result.ok_rows, np.int64).tobytes()
    tbl = b"" if result.table is None else _ipc(result.table)
    return pa.RecordBatch.from_pydict(
        {
            "meta": [json.dumps(meta)],
            "body": [result.body or b""],
            "lines": [lines],
            "ok_rows": [ok_rows],
            "tbl": [tbl],
        },
        schema=_RESULT_ARROW,
    )


def _encode_error(exc: BaseException) -> pa.RecordBatch:
    line = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return pa.RecordBatch.from_pydict(
        {
            "meta": [json.dumps({"error": text})],
            **{n: [b""] for n in ("body", "lines", "ok_rows", "tbl")},
        },
        schema=_RESULT_ARROW,
    )


def decode_result(row: Any, seq: int, file_index: int) -> ChunkResult:
    """The driver's side of :func:`encode_result`.

    Raises:
        ScoringError: the executor reported an error (its exception in one line).
    """
    meta = json.loads(row["meta"])
    if "error" in meta:
        raise ScoringError(f"Spark scoring failed on an executor: {meta['error']}")
    body, lines, ok_rows, tbl = (bytes(row[n]) for n in ("body", "lines", "ok_rows", "tbl"))
    return ChunkResult(
        seq=seq,
        file_index=file_index,
        last_of_file=False,
        rows=meta["rows"],
        relative=True,
        end_offset=None,
        columns=meta["columns"],
        body=body or None,
        lines=_from_ipc(lines).column("l").combine_chunks() if lines else None,
        ok_rows=np.frombuffer(ok_rows, np.int64) if ok_rows else None,
        table=_from_ipc(tbl) if tbl else None,
        rejects=meta["rejects"],
        read=meta["read"],
        scored=meta["scored"],
    )


def root_cause(exc: BaseException) -> str:
    """The innermost cause of a Spark exception in one line: the Java exception at the end
    of its cause chain, else the Python error line inside it, else its first line."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            inner, depth = java, 0
            while inner.getCause() is not None and depth < 20:
                inner, depth = inner.getCause(), depth + 1
            text = str(inner.toString()).strip().splitlines()
            python = [ln for ln in text if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", ln)]
            if text:
                return (python[-1] if python else text[0])[:300]
        except Exception:
            logger.debug("cannot walk the Java cause chain", exc_info=True)
    lines = str(exc).strip().splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", line.strip()):
            return line.strip()[:300]
    return (lines or [type(exc).__name__])[0][:300]
