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
import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from batch.checkpoint import Counts, rejects_path
from batch.fastpath import LeanDisagreement, LeanPredictor, plan_lean
from batch.job import ProgressCallback, score_job
from batch.pool import JobOptions, WorkerPool
from batch.readers import (
    DEFAULT_CHUNK_ROWS,
    InputFile,
    expand_inputs,
    read_columns,
)
from batch.record import (
    Manifest,
    open_run_store,
    package_versions,
    record_run,
    sha256,
)
from batch.schema import (
    check_columns,
    input_schema_of,
)
from batch.spark_io import is_uri
from batch.tuning import freeze_gc, no_gc, quick_gil_handoffs, scoring_memory_pool
from lifecycle.base.errors import InvalidArgumentError, ScoringError
from lifecycle.base.fetch import ModelFetch
from lifecycle.base.files import atomic_write_text
from lifecycle.base.lean import cache_dir
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)


FORMATS = ("csv", "parquet")


ENGINES = ("local", "spark")


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
    shared_path: bool = False,
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
        master: the Spark master URL (engine ``spark``). With a cluster master, inputs must
            be URIs every node reads (``hdfs://``, ``s3a://``, ``abfss://``, ``dbfs:/``,
            ``file://``), unless ``shared_path``; the output may be such a URI too.
        progress: called after every chunk with a dict (rows_read, rows_per_s, fraction).
        record: record the run and a ``batch`` deployment in ``ws``.
        shared_path: local paths are on storage mounted at the same path on every Spark node.

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

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    staged = None
    if engine == "spark":
        from batch.spark_io import stage_output

        files = _spark_inputs([str(i) for i in items], str(output), delimiter, master, shared_path)
        if is_uri(str(output)):
            staged = stage_output(str(output), cache_dir())
            output = str(staged.local) + ("/" if staged.folder else "")
    else:
        remote = [str(i) for i in [*items, output] if is_uri(str(i))]
        if remote:
            raise InvalidArgumentError(
                f"'{remote[0]}' is a URI: only --engine spark reads and writes URIs "
                "(the local engine takes paths on this machine)"
            )
        files = expand_inputs(items)
    # Decided on the text as given: Path("scored/") drops the slash that asks for a folder.
    to_dir = _is_dir_target(output)
    jobs = _plan_outputs(files, Path(output), fmt, to_dir)
    out_fmt = _output_format(Path(output), fmt, per_input=len(jobs) > 1 or to_dir)

    counts_total = Counts()
    outputs: list[dict[str, Any]] = []
    resumed = False
    pool: WorkerPool | None = None
    lean: LeanPredictor | None = None
    fast_path: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        # The model's libraries are not imported while a child resolves: the two processes'
        # modules side by side (~500 MB) would outweigh the scoring itself.
        fetch = stack.enter_context(ModelFetch(ws, str(model_uri), restricted_action="score"))
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
            pool = stack.enter_context(WorkerPool(model_dir, n_workers, threads=lean is not None))
        if lean is not None:
            # MLflow is not imported while the lean path scores (it is ~110 MB and seconds
            # of GIL-bound imports): the run is recorded, and the lean path checked against
            # pyfunc, after the last chunk. Arrow's system allocator gives freed blocks back.
            stack.enter_context(scoring_memory_pool())
            stack.enter_context(quick_gil_handoffs())
            lean.wait_loaded()
            freeze_gc()
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
            opts = JobOptions(
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
                    counts, was_resumed = score_job(
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
                    counts, was_resumed = score_job(
                        job_files, out_path, opts, pool, False, fingerprint_base, progress
                    )
            resumed = resumed or was_resumed
            for k in ("rows_read", "rows_scored", "rows_rejected", "chunks"):
                setattr(counts_total, k, getattr(counts_total, k) + getattr(counts, k))
            outputs.append(
                {
                    "path": str(out_path),
                    "inputs": [str(f.path) for f in job_files],
                    "rejects": str(rejects_path(out_path)) if counts.rows_rejected else None,
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
    digest_futures = {f.where: background.submit(_digest, f, master) for f in files}
    run_store = open_run_store(ws) if record else None
    manifest = Manifest(
        model_uri=str(model_uri),
        model_name=resolved.name,
        model_version=resolved.version,
        workspace=ws.name,
        engine=engine,
        inputs=[
            {"path": f.where, "size": f.size, **digest_futures[f.where].result()} for f in files
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
        packages=package_versions(),
        fast_path=fast_path,
    )
    manifest_path = _manifest_path(Path(output), to_dir)
    manifest.manifest_path = str(manifest_path)
    background.shutdown()
    if run_store is not None:
        with no_gc():
            manifest.run_id = record_run(
                ws, run_store, resolved, str(model_uri), manifest, manifest_path, started
            )
    if staged is not None:
        produced = [manifest_path]
        for entry in manifest.outputs:
            produced.append(Path(entry["path"]))
            entry["path"] = staged.to_uri(entry["path"])
            if entry["rejects"]:
                produced.append(Path(entry["rejects"]))
                entry["rejects"] = staged.to_uri(entry["rejects"])
        manifest.manifest_path = staged.to_uri(manifest_path)
    atomic_write_text(manifest_path, json.dumps(manifest.to_dict(), indent=2, default=str))
    if staged is not None:
        from batch.spark import get_spark

        staged.upload(get_spark(master), produced)
        staged.remove()
    logger.info(
        "scored %d of %d rows (%d rejected) in %.1f s",
        manifest.rows_scored,
        manifest.rows_read,
        manifest.rows_rejected,
        duration,
    )
    return manifest


def _spark_inputs(
    items: list[str], output: str, delimiter: str, master: str | None, shared_path: bool
) -> list[InputFile]:
    """The inputs of a Spark run, in the order given: paths on this machine (refused with a
    cluster master unless ``shared_path``) and URIs listed through Spark's file system."""
    from batch.spark_io import check_reachable, expand_uris

    check_reachable(items, master, shared_path)
    files: list[InputFile] = []
    spark = None
    for item in items:
        if is_uri(item):
            if spark is None:
                from batch.spark import get_spark

                spark = get_spark(master)
            files.extend(expand_uris(spark, [item], delimiter))
        else:
            files.extend(expand_inputs([item]))
    unique: list[InputFile] = []
    seen: set[str] = set()
    for f in files:
        if f.where not in seen:
            seen.add(f.where)
            unique.append(f)
    if is_uri(output) and any(f.where == output for f in unique):
        raise InvalidArgumentError(f"Output '{output}' is also an input")
    return unique


def _digest(f: InputFile, master: str | None) -> dict[str, Any]:
    """The manifest's digest of an input: SHA-256 of a local file; for a URI, the storage's
    own checksum when it keeps one, and why the SHA-256 is absent."""
    if f.uri is None:
        return {"sha256": sha256(f.path)}
    from batch.spark import get_spark
    from batch.spark_io import remote_checksum

    return {
        "sha256": None,
        "checksum": remote_checksum(get_spark(master), f.uri),
        "sha256_absent": "read by Spark from storage this machine does not open; "
        "size and modification time identify it",
    }


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
    files: list[InputFile], output: Path, fmt: str | None, to_dir: bool
) -> list[tuple[Path, list[InputFile]]]:
    """(output path, inputs) pairs: one per input into a folder (``to_dir``: the output is an
    existing folder or ends with a slash; it is created), or one combined file."""
    if to_dir:
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


def _manifest_path(output: Path, to_dir: bool) -> Path:
    if to_dir:
        return output / "manifest.json"
    return output.with_name(output.name + ".manifest.json")
