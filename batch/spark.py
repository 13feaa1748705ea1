"""The Spark engine of batch scoring: the same inputs, outputs, rejects and counts as the
local engine, with predictions computed by ``mlflow.pyfunc.spark_udf`` on the executors.

Owns: the Spark session (``--master``, default ``local[*]``; ``PYSPARK_PYTHON`` pinned to
this interpreter so executors have pandas and MLflow), reading CSV (all columns as text,
multi-line quoted values, ``NA``/empty as null, malformed records captured) and Parquet,
numbering rows in input order, coercing signature columns with ``try_cast`` so bad values
become rejects instead of failing the job, and streaming the ordered result through the
same writer as the local engine (temp file + rename, ``<output>.rejects.csv``).

A row on which the model itself raises would fail the whole ``spark_udf`` job (it scores
whole Arrow batches). The scored result is therefore materialised (cached) before anything
is written; if that job fails, the file is scored again with ``mapInPandas`` running the same
pyfunc model with the local engine's bisection, so the failing rows become rejects
(``model error: ...``) and every other row is scored, as in the local engine.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from batch.checkpoint import Counts, finish, open_checkpoint, save_checkpoint
from batch.output import (
    REJECTS_HEADER,
    SOURCE_COLUMNS,
    ParquetParts,
    header_bytes,
    render_csv,
    unique_names,
)
from batch.predict import predict_isolating_errors
from batch.readers import InputFile, read_columns
from lifecycle.base.envs import choose_env_manager
from lifecycle.base.errors import ScoringError
from lifecycle.base.lean import InputColumn
from lifecycle.base.loader import ENV_MANAGER_VAR, load_pyfunc
from lifecycle.base.typemaps import SPARK_TYPES, spark_type

logger = logging.getLogger(__name__)

_CORRUPT = "_lifecycle_corrupt_record"
_ROW = "_lifecycle_row"
_REASON = "_lifecycle_reason"
_PRED = "_lifecycle_prediction"
_RAW = "_lifecycle_raw"


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


def get_spark(master: str | None = None) -> Any:
    """A SparkSession whose Python workers run this interpreter (``PYSPARK_PYTHON``).

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
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName("lifecycle-score")
        .master(master or "local[*]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _result_type(model_dir: str) -> tuple[Any, list[str] | None]:
    """(spark_udf result_type, output column names for a struct result or None)."""
    from mlflow.models import Model
    from pyspark.sql import types as T

    sig = Model.load(model_dir).signature
    outputs = getattr(sig, "outputs", None) if sig is not None else None
    if outputs is None or not outputs.inputs:
        return "double", None
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        # A tensor's type is a numpy dtype: text, integers, floats or booleans.
        kind = {
            "U": "string",
            "S": "string",
            "O": "string",
            "i": "long",
            "u": "long",
            "b": "boolean",
        }
        return kind.get(specs[0].type.kind, "double"), None
    if len(specs) == 1 and not outputs.has_input_names():
        return spark_type(specs[0].type.name), None
    if len(specs) == 1:  # one output column is "prediction", as in the local engine
        return spark_type(specs[0].type.name), None
    fields = [
        T.StructField(str(s.name), T._parse_datatype_string(spark_type(s.type.name))) for s in specs
    ]
    return T.StructType(fields), [str(s.name) for s in specs]


def _read(spark: Any, f: InputFile, delimiter: str) -> tuple[Any, list[str]]:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    names = read_columns(f, delimiter)
    if f.fmt == "parquet":
        df = spark.read.parquet(str(f.path))
        df = df.select(*[F.col(f"`{n}`").cast("string").alias(n) for n in names])
        return df.withColumn(_CORRUPT, F.lit(None).cast("string")), names
    schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names]
        + [T.StructField(_CORRUPT, T.StringType())]
    )
    df = spark.read.csv(
        str(f.path),
        schema=schema,
        header=True,
        sep=delimiter,
        multiLine=True,
        quote='"',
        escape='"',
        nullValue="NA",
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=_CORRUPT,
        encoding="UTF-8",
    )
    return df, names


def _coercions(specs: tuple[InputColumn, ...]) -> tuple[list[Any], Any]:
    """(cast column expressions, reason expression: null when the row is fine)."""
    from pyspark.sql import functions as F

    casts, reasons = [], []
    for spec in specs:
        raw = F.col(f"`{spec.name}`")
        target = SPARK_TYPES.get(spec.type, "string")
        if spec.type == "boolean":
            low = F.lower(F.trim(raw))
            cast = (
                F.when(low.isin("true", "t", "yes", "y", "1"), F.lit(True))
                .when(low.isin("false", "f", "no", "n", "0"), F.lit(False))
                .otherwise(F.lit(None).cast("boolean"))
            )
        elif target == "string":
            cast = raw
        else:
            cast = F.expr(f"try_cast(trim(`{spec.name}`) as {target})")
        casts.append(cast.alias(spec.name))
        if spec.type in ("double", "float", "string", "datetime"):
            bad = raw.isNotNull() & cast.isNull()
        else:  # integers and booleans cannot hold missing values
            bad = cast.isNull()
        reasons.append(
            F.when(
                bad & raw.isNull(),
                F.lit(f"missing value for required column '{spec.name}' ({spec.type})"),
            ).when(
                bad,
                F.concat(
                    F.lit(f"column '{spec.name}': cannot convert '"),
                    raw,
                    F.lit(f"' to {spec.type}"),
                ),
            )
        )
    return casts, F.coalesce(*reasons) if reasons else F.lit(None).cast("string")


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
        ScoringError: Spark or Java is missing, the model fails on Spark, or rejected rows
            exceed the allowed rate (no output is left behind).
    """
    spark = get_spark(master)
    base = {**(fingerprint_base or {}), "engine": "spark"}
    partials, state, resumed = open_checkpoint(out, files, base, opts.fmt, resume)
    if resumed:
        logger.info("resuming %s on Spark at input file %d", out, state["file_index"] + 1)
    counts = Counts(**state["counts"])
    try:
        _score_on_spark(spark, model_dir, files, partials, opts, counts, state, progress)
    except KeyboardInterrupt:
        logger.warning("interrupted: rerun with the same arguments to resume %s", out)
        raise
    except BaseException as exc:
        partials.remove()
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ScoringError(f"Spark scoring of '{out}' failed: {line}") from exc
        raise
    finish(out, partials, opts, counts)
    return counts, resumed


def _score_on_spark(
    spark: Any,
    model_dir: str,
    files: list[InputFile],
    partials: Any,
    opts: Any,
    counts: Any,
    state: dict[str, Any],
    progress: Any = None,
) -> None:
    import mlflow.pyfunc
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    result_type, struct_names = _result_type(model_dir)
    from lifecycle.base.workspaces import quiet_mlflow_progress

    # A model that runs in its own environment (lifecycle.base.envs) is scored by the
    # mapInPandas path, whose load_pyfunc starts its worker; spark_udf would load it here.
    own_env = choose_env_manager(model_dir, os.environ.get(ENV_MANAGER_VAR) or "auto")
    predict = None
    if own_env is None:
        with quiet_mlflow_progress():
            predict = mlflow.pyfunc.spark_udf(
                spark, model_dir, result_type=result_type, env_manager="local"
            )
    specs = opts.schema.columns or ()
    header: list[str] | None = state["header"]
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
        rejects_started = state["rejects_bytes"] > 0

        def write_rejects(rows: list[list[str]]) -> None:
            nonlocal rejects_started
            if not rows:
                return
            if not rejects_started:
                rej_fh.write(header_bytes(REJECTS_HEADER, ","))
                rejects_started = True
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            rej_fh.write(buf.getvalue().encode("utf-8"))

        for index in range(state["file_index"], len(files)):
            f = files[index]
            df, names = _read(spark, f, opts.delimiter)
            df = df.cache()
            malformed = [
                r[0] for r in df.filter(F.col(_CORRUPT).isNotNull()).select(_CORRUPT).collect()
            ]
            good = df.filter(F.col(_CORRUPT).isNull()).select(*[F.col(f"`{n}`") for n in names])
            numbered = spark.createDataFrame(
                good.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1] + 1)),
                T.StructType(
                    [T.StructField(n, T.StringType()) for n in names]
                    + [T.StructField(_ROW, T.LongType())]
                ),
            )
            casts, reason = _coercions(specs)
            checked = numbered.withColumn(_REASON, reason).cache()
            rejected = (
                checked.filter(F.col(_REASON).isNotNull())
                .orderBy(_ROW)
                .select(*[F.col(f"`{n}`") for n in names], _ROW, _REASON)
                .collect()
            )
            reject_rows = []
            for r in rejected:
                values = ["" if r[n] is None else str(r[n]) for n in names]
                buf = io.StringIO()
                csv.writer(buf, delimiter=opts.delimiter, lineterminator="").writerow(values)
                reject_rows.append([f.name, str(r[_ROW]), buf.getvalue(), r[_REASON]])
            for text in malformed:
                got = len(next(csv.reader([text], delimiter=opts.delimiter), []))
                reject_rows.append(
                    [f.name, "", text.rstrip("\r\n"),
                     f"malformed record: expected {len(names)} fields, got {got}"]
                )  # fmt: skip
            keep = opts.keep if opts.keep is not None else names
            ok = checked.filter(F.col(_REASON).isNull())
            kept = [F.col(f"`{n}`").alias(f"k_{i}") for i, n in enumerate(keep)]
            # The model runs here, before anything is written. A failure is handled below:
            # Spark's own multi-page ERROR log of it would only bury the one-line warning.
            spark.sparkContext.setLogLevel("OFF")
            try:
                if predict is None:
                    raise _OwnEnvironment()
                scored = ok.select(*kept, F.col(_ROW), predict(F.struct(*casts)).alias(_PRED))
                scored = scored.orderBy(_ROW).cache()
                scored.count()
            except Exception as exc:
                if isinstance(exc, _OwnEnvironment):
                    logger.info("scoring %s with the model in its own environment", f.name)
                elif not type(exc).__module__.startswith(("pyspark", "py4j")):
                    raise
                else:
                    scored.unpersist()
                    logger.warning(
                        "the model failed on some rows of %s on Spark (%s): scoring it again "
                        "with the failing rows isolated",
                        f.name,
                        _root_cause(exc),
                    )
                spark.sparkContext.setLogLevel("ERROR")
                scored, model_rejects = _score_isolating(
                    spark, model_dir, ok, names, keep, casts, specs, result_type, opts
                )
                for row_number, raw, why in model_rejects:
                    reject_rows.append([f.name, str(row_number), raw, why])
                reject_rows.sort(key=lambda r: (r[1] == "", int(r[1]) if r[1] else 0))
            finally:
                spark.sparkContext.setLogLevel("ERROR")
            n_ok = 0
            batch: list[Any] = []
            for row in scored.toLocalIterator(prefetchPartitions=True):
                batch.append(row)
                if len(batch) >= opts.chunk_rows:
                    header, writer = _write_rows(
                        batch, f, keep, struct_names, opts, out_fh, header, writer
                    )
                    n_ok += len(batch)
                    counts.chunks += 1
                    batch = []
            if batch or n_ok == 0:
                header, writer = _write_rows(
                    batch, f, keep, struct_names, opts, out_fh, header, writer
                )
                n_ok += len(batch)
                counts.chunks += 1
            write_rejects(reject_rows)
            counts.rows_read += n_ok + len(reject_rows)
            counts.rows_scored += n_ok
            counts.rows_rejected += len(reject_rows)
            scored.unpersist()
            checked.unpersist()
            df.unpersist()
            state["file_index"] = index + 1
            state["header"] = header
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
        if opts.fmt == "csv" and header is None:
            cols = (
                (SOURCE_COLUMNS if opts.source_columns else [])
                + list(opts.keep or [])
                + ["prediction"]
            )
            out_fh.write(header_bytes(cols, opts.delimiter))
        if writer is not None and not writer.merge(out_fh):
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"prediction": pa.array([], pa.float64())}), out_fh)


class _OwnEnvironment(Exception):
    """The model runs in its own environment: score by ``mapInPandas`` from the start."""


def _score_isolating(
    spark: Any,
    model_dir: str,
    ok: Any,
    names: list[str],
    keep: list[str],
    casts: list[Any],
    specs: tuple[InputColumn, ...],
    result_type: Any,
    opts: Any,
) -> tuple[Any, list[tuple[int, str, str]]]:
    """Score ``ok`` with ``mapInPandas``: the same pyfunc model, failing rows bisected out.

    Returns:
        (scored DataFrame with the columns of the ``spark_udf`` path, cached and ordered;
        the model's rejects as (row number, raw text, reason), in row order).
    """
    from pyspark import SparkFiles
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(result_type, T.StructType):
        out_fields = [(f.name, f.dataType) for f in result_type.fields]
    else:
        out_fields = [(_PRED, T._parse_datatype_string(str(result_type)))]
    model_name = Path(model_dir).name
    try:
        spark.sparkContext.addFile(model_dir, recursive=True)
    except Exception as exc:  # already shipped in this session (same path)
        logger.debug("model already added to the Spark session: %s", exc)
    sig_names = [s.name for s in specs]
    raw_cols = [F.col(f"`{n}`").alias(f"r_{i}") for i, n in enumerate(names)]
    cast_cols = [c.alias(f"c_{i}") for i, c in enumerate(casts)]
    kept = [F.col(f"`{n}`").alias(f"k_{i}") for i, n in enumerate(keep)]
    source = ok.select(*kept, F.col(_ROW), *raw_cols, *cast_cols)
    schema = T.StructType(
        [T.StructField(f"k_{i}", T.StringType()) for i in range(len(keep))]
        + [T.StructField(_ROW, T.LongType())]
        + [T.StructField(f"_p_{j}", t) for j, (_n, t) in enumerate(out_fields)]
        + [T.StructField(_REASON, T.StringType()), T.StructField(_RAW, T.StringType())]
    )
    delimiter, n_keep, n_raw = opts.delimiter, len(keep), len(names)
    out_names = [n for n, _t in out_fields]

    def run(batches: Any) -> Any:
        import pandas as pd

        local = SparkFiles.get(model_name)

        model = load_pyfunc(local if Path(local).exists() else model_dir)
        for pdf in batches:
            pdf = pdf.reset_index(drop=True)
            frame = pd.DataFrame({name: pdf[f"c_{i}"] for i, name in enumerate(sig_names)})
            preds, errors = predict_isolating_errors(model, frame)
            out = pd.DataFrame({f"k_{i}": pdf[f"k_{i}"] for i in range(n_keep)})
            out[_ROW] = pdf[_ROW]
            good = [i for i in range(len(pdf)) if i not in errors]
            cols = preds if len(out_names) > 1 else _single(preds)
            for j, name in enumerate(out_names):
                values = pd.Series([None] * len(pdf), dtype=object)
                series = cols.get(name if len(out_names) > 1 else "prediction")
                if series is not None and good:
                    values.iloc[good] = list(series)
                out[f"_p_{j}"] = values
            reasons = [errors.get(i) for i in range(len(pdf))]
            out[_REASON] = reasons
            out[_RAW] = [
                _raw_line([pdf[f"r_{c}"][i] for c in range(n_raw)], delimiter)
                if reasons[i] is not None
                else None
                for i in range(len(pdf))
            ]
            yield out

    result = source.mapInPandas(run, schema=schema).cache()
    bad = result.filter(F.col(_REASON).isNotNull()).orderBy(_ROW).select(_ROW, _RAW, _REASON)
    model_rejects = [(int(r[_ROW]), str(r[_RAW]), str(r[_REASON])) for r in bad.collect()]
    pred_col = (
        F.struct(*[F.col(f"_p_{j}").alias(n) for j, (n, _t) in enumerate(out_fields)])
        if isinstance(result_type, T.StructType)
        else F.col("_p_0")
    )
    scored = (
        result.filter(F.col(_REASON).isNull())
        .select(*[F.col(f"k_{i}") for i in range(n_keep)], F.col(_ROW), pred_col.alias(_PRED))
        .orderBy(_ROW)
        .cache()
    )
    scored.count()
    result.unpersist()
    return scored, model_rejects


def _root_cause(exc: BaseException) -> str:
    """The Python error line inside a Spark exception (else its first line)."""
    import re

    lines = str(exc).strip().splitlines()
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", line.strip()):
            return line.strip()[:300]
    return (lines or [type(exc).__name__])[0][:300]


def _single(preds: dict[str, Any]) -> dict[str, Any]:
    """A single-output prediction under the name ``prediction`` whatever the model named it."""
    if "prediction" in preds or not preds:
        return preds
    return {"prediction": next(iter(preds.values()))}


def _raw_line(values: list[Any], delimiter: str) -> str:
    buf = io.StringIO()
    row = ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
    csv.writer(buf, delimiter=delimiter, lineterminator="").writerow(row)
    return buf.getvalue()


def _write_rows(
    rows: list[Any],
    f: InputFile,
    keep: list[str],
    struct_names: list[str] | None,
    opts: Any,
    out_fh: Any,
    header: list[str] | None,
    writer: Any,
) -> tuple[list[str] | None, Any]:
    if not rows:
        return header, writer
    cols: dict[str, Any] = {}
    if opts.source_columns:
        cols["source_file"] = pa.array([f.name] * len(rows), pa.string())
        cols["source_row"] = pa.array([r[_ROW] for r in rows], pa.int64())
    for i, name in enumerate(keep):
        cols[name] = pa.array([r[f"k_{i}"] for r in rows], pa.string())
    preds = [r[_PRED] for r in rows]
    if struct_names and len(struct_names) > 1:
        for j, name in enumerate(struct_names):
            cols[name] = pa.array([p[j] if p is not None else None for p in preds])
    else:
        cols[struct_names[0] if struct_names else "prediction"] = pa.array(preds)
    names = unique_names(list(cols))
    table = pa.table(list(cols.values()), names=names)
    if opts.fmt == "csv":
        if header is None:
            out_fh.write(header_bytes(names, opts.delimiter))
            header = names
        out_fh.write(render_csv(table, opts.delimiter))
        return header, writer
    writer.write(table)
    return names, writer
