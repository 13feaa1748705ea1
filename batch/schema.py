"""Matching input columns to a model's signature and coercing values, row by row.

Owns: the check that every required signature column is present (by name, any order;
extra columns allowed) with an MLflow-style message naming what is missing and what is extra,
and the per-column coercion of text (or typed Parquet) values to the signature's types, which
splits a chunk into rows ready for ``predict`` and rejected rows with a reason each.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle.base.errors import SchemaError
from lifecycle.base.lean import InputColumn
from lifecycle.base.typemaps import NUMERIC_TYPES, PLAIN_TYPES, arrow_types

logger = logging.getLogger(__name__)

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass(frozen=True)
class InputSchema:
    """The columns a model takes (None when the model has no column-based signature)."""

    columns: tuple[InputColumn, ...] | None

    @property
    def names(self) -> list[str]:
        """The signature's column names in signature order."""
        return [c.name for c in self.columns or ()]


def input_schema_of(model_dir: str) -> InputSchema:
    """Read the input schema of the MLflow model in ``model_dir`` (no model loading).

    Plain column signatures are read from the ``MLmodel`` YAML without importing MLflow
    (seconds saved per run); tensor and nested signatures go through MLflow.
    """
    from lifecycle.base.lean import input_columns, read_mlmodel

    mlmodel = read_mlmodel(model_dir)
    sig = mlmodel.get("signature") or {}
    if not sig.get("inputs"):
        return InputSchema(None)
    cols = input_columns(mlmodel)
    if cols is not None and all(c.type in PLAIN_TYPES for c in cols):
        return InputSchema(tuple(cols))
    return _input_schema_via_mlflow(model_dir)


def _input_schema_via_mlflow(model_dir: str) -> InputSchema:
    from mlflow.models import Model

    meta = Model.load(model_dir)
    sig = meta.signature
    if sig is None or sig.inputs is None or not sig.inputs.has_input_names():
        return InputSchema(None)
    cols = []
    for spec in sig.inputs.inputs:
        type_name = getattr(getattr(spec, "type", None), "name", None) or str(
            getattr(spec, "type", "string")
        )
        cols.append(
            InputColumn(str(spec.name), str(type_name), bool(getattr(spec, "required", True)))
        )
    return InputSchema(tuple(cols))


def is_numeric(schema: InputSchema) -> bool:
    """True when every signature column is a required number (one matrix can hold them)."""
    return bool(schema.columns) and all(
        c.type in NUMERIC_TYPES and c.required for c in schema.columns or ()
    )


def check_columns(schema: InputSchema, available: list[str], source: str) -> None:
    """Raise unless every required signature column is among ``available``.

    Raises:
        SchemaError: one line naming the missing column(s) and the extra ones.
    """
    if schema.columns is None:
        return
    have = set(available)
    missing = [c.name for c in schema.columns if c.required and c.name not in have]
    if missing:
        extra = [n for n in available if n not in set(schema.names)]
        note = f" Note that there were extra inputs: {extra}." if extra else ""
        raise SchemaError(f"Model is missing inputs {missing} in '{source}'.{note}")


@dataclass
class Coerced:
    """A chunk split into rows to score and rejected rows.

    ``frame`` holds the signature columns of the accepted rows (in signature order),
    ``ok`` is a boolean mask over the chunk, ``reasons`` maps a chunk row index to why it was
    rejected.
    """

    frame: pd.DataFrame
    ok: np.ndarray
    reasons: dict[int, str]


def coerce(table: pa.Table, schema: InputSchema) -> Coerced:
    """Coerce ``table``'s signature columns to the signature's types, rejecting bad rows.

    Without a column signature every column is passed as read.
    """
    n = table.num_rows
    if schema.columns is None:
        return Coerced(table.to_pandas(), np.ones(n, dtype=bool), {})
    data, ok, reasons = _coerce_columns(table, schema)
    frame = pd.DataFrame(data, copy=False)
    if reasons:
        frame = frame[ok].reset_index(drop=True)
    return Coerced(frame, ok, reasons)


@dataclass
class CoercedMatrix:
    """A chunk as one NumPy matrix (accepted rows, signature order) and its rejected rows.

    The matrix is Fortran-ordered with the dtype pandas would give the same columns, so an
    estimator sees the same array it would get from the DataFrame :func:`coerce` builds.
    """

    matrix: np.ndarray
    ok: np.ndarray
    reasons: dict[int, str]


def coerce_matrix(table: pa.Table, schema: InputSchema) -> CoercedMatrix:
    """Like :func:`coerce`, for an all-numeric signature (:func:`is_numeric`), without pandas.

    Raises:
        SchemaError: the signature is not all-numeric.
    """
    if not is_numeric(schema):
        raise SchemaError("coerce_matrix needs a signature of required numeric columns")
    data, ok, reasons = _coerce_columns(table, schema)
    columns = [np.asarray(data[c.name]) for c in schema.columns or ()]
    dtype = np.result_type(*columns)
    rows = np.flatnonzero(ok) if reasons else None
    n = len(rows) if rows is not None else table.num_rows
    matrix = np.empty((n, len(columns)), dtype=dtype, order="F")
    for j, values in enumerate(columns):
        matrix[:, j] = values[rows] if rows is not None else values
    return CoercedMatrix(matrix, ok, reasons)


def _coerce_columns(
    table: pa.Table, schema: InputSchema
) -> tuple[dict[str, Any], np.ndarray, dict[int, str]]:
    """(signature column -> values, mask of accepted rows, row -> reason it was rejected)."""
    n = table.num_rows
    reasons: dict[int, str] = {}
    data: dict[str, Any] = {}
    present = set(table.column_names)
    for spec in schema.columns or ():
        if spec.name not in present:
            continue
        arr = table.column(spec.name)
        values, bad = _coerce_column(arr, spec)
        for i in np.flatnonzero(bad):
            if int(i) not in reasons:
                raw = arr[int(i)].as_py()
                reasons[int(i)] = (
                    f"missing value for required column '{spec.name}' ({spec.type})"
                    if raw is None
                    else f"column '{spec.name}': cannot convert {raw!r} to {spec.type}"
                )
        data[spec.name] = values
    ok = np.ones(n, dtype=bool)
    if reasons:
        ok[list(reasons)] = False
    return data, ok, reasons


def _coerce_column(arr: pa.ChunkedArray, spec: InputColumn) -> tuple[Any, np.ndarray]:
    """(values as numpy/pandas, mask of rows that cannot be converted)."""
    n = len(arr)
    no_bad = np.zeros(n, dtype=bool)
    target = arrow_types().get(spec.type)
    if spec.type in ("double", "float"):
        try:
            cast = pc.cast(arr, target) if arr.type != target else arr
            return cast.to_numpy(zero_copy_only=False), no_bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raw = arr.to_pandas()
            num = pd.to_numeric(raw.astype("string").str.strip(), errors="coerce")
            bad = (raw.notna() & num.isna()).to_numpy()
            return num.astype(np.float64 if spec.type == "double" else np.float32).to_numpy(), bad
    if spec.type in ("long", "integer"):
        nulls = arr.is_null().to_numpy(zero_copy_only=False)
        try:
            cast = pc.cast(arr, target) if arr.type != target else arr
            if not nulls.any():
                return cast.to_numpy(zero_copy_only=False), no_bad
            filled = pc.fill_null(cast, 0).to_numpy(zero_copy_only=False)
            return filled, nulls
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raw = arr.to_pandas()
            num = pd.to_numeric(raw.astype("string").str.strip(), errors="coerce")
            integral = num.notna() & (num == np.floor(num.fillna(0)))
            bad = (~integral).to_numpy()
            dtype = np.int64 if spec.type == "long" else np.int32
            return num.where(integral, 0).astype(dtype).to_numpy(), bad
    if spec.type == "boolean":
        if pa.types.is_boolean(arr.type):
            nulls = arr.is_null().to_numpy(zero_copy_only=False)
            return pc.fill_null(arr, False).to_numpy(zero_copy_only=False), nulls
        text = arr.to_pandas().astype("string").str.strip().str.lower()
        is_true, is_false = text.isin(_TRUE), text.isin(_FALSE)
        bad = (~(is_true | is_false)).fillna(True).to_numpy(dtype=bool)
        return is_true.fillna(False).to_numpy(dtype=bool), bad
    if spec.type == "datetime":
        raw = arr.to_pandas()
        dt = pd.to_datetime(raw, errors="coerce")
        return dt.to_numpy(), (raw.notna() & dt.isna()).to_numpy()
    if spec.type == "string":
        if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
            arr = pc.cast(arr, pa.string())
        return arr.to_pandas().astype(object).to_numpy(), no_bad
    # binary and anything else: as read
    return arr.to_pandas().to_numpy(), no_bad


def raw_text(table: pa.Table, index: int, delimiter: str = ",") -> str:
    """Row ``index`` of ``table`` as one CSV record (the text as read, re-quoted when needed)."""
    values = [
        "" if v is None else str(v)
        for v in (table.column(c)[index].as_py() for c in table.column_names)
    ]
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="").writerow(values)
    return buf.getvalue()
