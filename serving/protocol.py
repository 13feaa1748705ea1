"""Wire formats of ``POST /invocations``: MLflow's scoring protocol and Azure ML's.

MLflow (``mlflow models serve``): JSON with exactly one of ``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs`` (+ optional ``params``), or ``text/csv``;
the answer is ``{"predictions": ...}``. The general path hands the body to MLflow's own
``mlflow.pyfunc.scoring_server.invocations`` so parsing, schema enforcement and error codes
are MLflow's, byte for byte.

Azure ML (the no-code MLflow deployment's scoring script): ``{"input_data": ...,
"params": {...}}`` where ``input_data`` in split form (``columns``/``index``/``data``)
becomes a DataFrame, a list becomes a NumPy array and a dict of lists becomes named arrays;
the answer is the bare prediction as JSON (a list, or a list of records for a DataFrame),
with no ``predictions`` wrapper.

This module also recognises the request shapes the fast path can take without changing
the answer (:func:`fast_rows`): plain numeric ``dataframe_split`` / ``dataframe_records``
/ Azure split bodies with every signature column present.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

logger = logging.getLogger(__name__)

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
AZURE_KEY = "input_data"


@dataclass
class Reply:
    """An HTTP answer: status, body bytes and content type."""

    status: int
    body: bytes
    content_type: str = CONTENT_TYPE_JSON


def error_reply(status: int, error_code: str, message: str) -> Reply:
    """A JSON error in MLflow's shape: ``{"error_code": ..., "message": ...}``."""
    return Reply(status, json.dumps({"error_code": error_code, "message": message}).encode())


def is_json(content_type: str | None) -> bool:
    """True when the content type is exactly ``application/json`` (MLflow's fast shape)."""
    return content_type == CONTENT_TYPE_JSON


class TooDeeplyNested(ValueError):
    """A JSON body nested deeper than the decoder can follow (answered 400)."""


_DECODER = msgspec.json.Decoder()


def decode_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (the general path decides).

    Decoded as :func:`json.loads` decodes it (what MLflow's scoring server uses): msgspec
    parses first (2-4x faster; integers of any size stay exact, as in json.loads), and what
    it refuses goes to :func:`json.loads` — NaN/Infinity literals, numbers past float64's
    range, lone surrogates, a byte-order mark, UTF-16, and errors.

    Raises:
        TooDeeplyNested: arrays or objects nested past the decoder's recursion limit.
    """
    try:
        obj = _DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):
        pass
    else:
        return obj if type(obj) is dict else None
    try:
        obj = json.loads(body)
    except RecursionError:
        raise TooDeeplyNested(
            "JSON body nested too deeply: no model input needs more than a few levels"
        ) from None
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def is_azure_payload(obj: dict[str, Any]) -> bool:
    """True for Azure ML's ``{"input_data": ...}`` body (and no MLflow input key)."""
    return AZURE_KEY in obj and not any(k in obj for k in MLFLOW_FORMATS)


def fast_rows(
    obj: dict[str, Any], body: bytes, columns: tuple[str, ...]
) -> tuple[np.ndarray, str] | None:
    """A float64 matrix in signature order from a plain numeric body, or None.

    Only shapes whose meaning is unambiguous qualify: ``dataframe_split`` /
    ``dataframe_records`` (MLflow) or ``input_data`` in split form (Azure), no other
    top-level key, every signature column present (extra columns are dropped, as MLflow
    does), numbers only (no booleans, strings, nulls, NaN or infinities), at least one row.
    Anything else returns None and goes through the general path, which answers exactly
    as MLflow does, errors included.

    Returns:
        (matrix, "mlflow" | "azure") or None.
    """
    if len(obj) != 1 or b"true" in body or b"false" in body:
        return None
    key, payload = next(iter(obj.items()))
    if key == "dataframe_split" or key == AZURE_KEY:
        matrix = _split_matrix(payload, columns)
    elif key == "dataframe_records":
        matrix = _records_matrix(payload, columns)
    else:
        return None
    if matrix is None:
        return None
    return matrix, ("azure" if key == AZURE_KEY else "mlflow")


def _numeric(rows: Any, width: int) -> np.ndarray | None:
    try:
        arr = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != width or arr.dtype.kind not in "fi":
        return None
    out = arr.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        return None
    return out


def _split_matrix(payload: Any, columns: tuple[str, ...]) -> np.ndarray | None:
    if not isinstance(payload, dict) or "data" not in payload or "columns" not in payload:
        return None
    if not set(payload) <= {"columns", "data", "index"}:
        return None
    names = payload["columns"]
    data = payload["data"]
    if not isinstance(names, list) or not isinstance(data, list):
        return None
    if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        return None
    index = payload.get("index")
    if index is not None and (
        not isinstance(index, list)
        or len(index) != len(data)
        # pandas reads list entries as a MultiIndex (a different frame than the rows say):
        # only scalar labels are unambiguous; the general path answers the rest as MLflow does.
        or not all(isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in index)
    ):
        return None
    position = {n: i for i, n in enumerate(names)}
    try:
        order = [position[c] for c in columns]
    except KeyError:
        return None
    arr = _numeric(data, len(names))
    if arr is None:
        return None
    if order != list(range(len(names))):
        arr = arr[:, order]
    return np.ascontiguousarray(arr)


def _records_matrix(payload: Any, columns: tuple[str, ...]) -> np.ndarray | None:
    if not isinstance(payload, list) or not payload:
        return None
    try:
        rows = [[rec[c] for c in columns] for rec in payload]
    except (KeyError, TypeError):
        return None
    if not all(isinstance(rec, dict) for rec in payload):
        return None
    return _numeric(rows, len(columns))


def render_predictions(predictions: Any, wrap: str) -> bytes:
    """JSON bytes of ``predictions`` as MLflow (``{"predictions": ...}``) or Azure (bare).

    Uses MLflow's own conversion (``_get_jsonable_obj`` with ``records`` orient and
    ``NumpyEncoder``), so the bytes equal what MLflow's scoring server writes.
    """
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "biufU":
        # tolist() leaves only Python scalars, which NumpyEncoder never has to handle: the
        # same bytes without importing MLflow on the fast path.
        plain_doc = predictions.tolist()
        return json.dumps({"predictions": plain_doc} if wrap == "mlflow" else plain_doc).encode()
    from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

    if isinstance(predictions, np.ndarray):
        plain: Any = predictions.tolist()
    else:
        plain = _get_jsonable_obj(predictions, pandas_orient="records")
    doc = {"predictions": plain} if wrap == "mlflow" else plain
    return json.dumps(doc, cls=NumpyEncoder).encode()


def azure_input(payload: Any, schema: Any) -> Any:
    """Azure's ``input_data`` as the scoring script builds it.

    Split form -> DataFrame (cast to the signature's types), list -> NumPy array, dict of
    lists -> dict of NumPy arrays.

    Raises:
        ValueError: any other shape (the caller answers 400).
    """
    import pandas as pd
    from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

    if (
        isinstance(payload, dict)
        and "data" in payload
        and set(payload)
        <= {
            "columns",
            "index",
            "data",
        }
    ):
        df = pd.DataFrame(
            data=payload["data"], columns=payload.get("columns"), index=payload.get("index")
        )
        return cast_df_types_according_to_schema(df, schema) if schema is not None else df
    if isinstance(payload, list):
        return np.asarray(payload)
    if isinstance(payload, dict):
        return {k: np.asarray(v) for k, v in payload.items()}
    raise ValueError(
        "input_data must be a split-orient object {columns, index, data}, a list of rows, "
        f"or a dict of lists; got {type(payload).__name__}"
    )
