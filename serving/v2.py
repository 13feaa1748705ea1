"""The Open Inference Protocol (V2, REST) on the scoring server: health, server and model
metadata (inputs and outputs from the signature, with V2 datatypes), readiness, and ``infer``
with one named tensor per signature column or one 2-D tensor in column order.

Predictions come back as MLServer's MLflow runtime encodes them: a DataFrame as one output
per column, anything else as one tensor named ``output-1``. Errors are ``{"error": "..."}``
with a 4xx status, as the protocol specifies.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

import numpy as np

from serving.protocol import Reply

#: MLflow column types -> V2 datatypes.
V2_TYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}
_NUMPY = {"FP64": np.float64, "FP32": np.float32, "FP16": np.float16, "INT64": np.int64,
          "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT64": np.uint64,
          "UINT32": np.uint32, "UINT16": np.uint16, "UINT8": np.uint8, "BOOL": np.bool_}  # fmt: skip

#: /v2/models/NAME[/versions/V][/ready|/infer]
ROUTE = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<op>/ready|/infer)?/?$"
)


def error(status: int, message: str) -> Reply:
    """A V2 error answer."""
    return Reply(status, json.dumps({"error": message}).encode())


def ok(doc: dict[str, Any]) -> Reply:
    return Reply(200, json.dumps(doc).encode())


def signature_columns(input_schema: Any) -> list[tuple[str, str]]:
    """(name, V2 datatype) of each input column of an MLflow schema (empty without one)."""
    if input_schema is None or not getattr(input_schema, "has_input_names", lambda: False)():
        return []
    out = []
    for spec in input_schema.inputs:
        kind = getattr(spec, "type", None)
        name = getattr(kind, "name", str(kind))
        out.append((str(spec.name), V2_TYPES.get(str(name).lower(), "BYTES")))
    return out


def model_metadata(
    name: str, version: str | None, columns: list[tuple[str, str]]
) -> dict[str, Any]:
    """``GET /v2/models/NAME``: the model's inputs (``signature_columns``)."""
    return {
        "name": name,
        "versions": [version] if version else [],
        "platform": "mlflow",
        "inputs": [{"name": col, "datatype": dtype, "shape": [-1]} for col, dtype in columns],
        "outputs": [],
    }


def _array(inp: dict[str, Any]) -> np.ndarray:
    name = inp.get("name")
    shape = inp.get("shape")
    dtype = str(inp.get("datatype", "")).upper()
    data = inp.get("data")
    if not isinstance(name, str) or not isinstance(shape, list) or data is None:
        raise ValueError("each input needs a name, a shape and data")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"input '{name}': shape {shape} is not a list of sizes")
    flat = np.asarray(data, dtype=object).reshape(-1)
    if flat.size != math.prod(shape):
        raise ValueError(f"input '{name}': {flat.size} values for shape {shape}")
    if dtype == "BYTES":
        arr = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in flat], dtype=object)
    elif dtype in _NUMPY:
        try:
            arr = flat.astype(_NUMPY[dtype])
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"input '{name}': data are not {dtype}: {exc}") from None
    else:
        raise ValueError(f"input '{name}': unknown datatype '{dtype}'")
    return arr.reshape(shape)


def decode_inputs(obj: Any, columns: list[tuple[str, str]]) -> Any:
    """The model input of an ``infer`` request: a DataFrame in signature order (one tensor per
    column, or one 2-D tensor of all columns), or the bare tensor without a signature.

    Raises:
        ValueError: one line saying what is wrong and what was expected.
    """
    import pandas as pd

    if not isinstance(obj, dict) or not isinstance(obj.get("inputs"), list) or not obj["inputs"]:
        raise ValueError("the request needs a non-empty 'inputs' list")
    arrays = {str(i.get("name")) if isinstance(i, dict) else "": i for i in obj["inputs"]}
    if not all(isinstance(i, dict) for i in obj["inputs"]):
        raise ValueError("each input must be an object")
    names = [c for c, _ in columns]
    if names and set(arrays) >= set(names):
        frame = {}
        for col in names:
            arr = _array(arrays[col])
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise ValueError(
                    f"input '{col}': shape {list(arr.shape)}; expected [rows] or [rows, 1]"
                )
            frame[col] = arr
        lengths = {len(a) for a in frame.values()}
        if len(lengths) > 1:
            raise ValueError(f"inputs have different lengths {sorted(lengths)}")
        return pd.DataFrame(frame, columns=names)
    if len(obj["inputs"]) == 1:
        arr = _array(obj["inputs"][0])
        if not names:
            return arr
        if arr.ndim == 1 and len(names) == 1:
            return pd.DataFrame({names[0]: arr})
        if arr.ndim == 2 and arr.shape[1] == len(names):
            return pd.DataFrame(arr, columns=names)
        raise ValueError(
            f"input shape {list(arr.shape)}; expected [rows, {len(names)}] in the column order "
            f"{names}, or one input per column"
        )
    missing = [n for n in names if n not in arrays]
    raise ValueError(f"missing input(s) {missing}; expected one per column: {names}")


def _v2_type(arr: np.ndarray) -> str:
    kind = arr.dtype
    if kind == np.bool_:
        return "BOOL"
    for name, np_type in _NUMPY.items():
        if kind == np.dtype(np_type):
            return name
    return "BYTES"


def _tensor(name: str, values: Any) -> dict[str, Any]:
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind in "USM":
        arr = arr.astype(str)
        return {"name": name, "shape": list(arr.shape), "datatype": "BYTES",
                "data": arr.reshape(-1).tolist()}  # fmt: skip
    return {"name": name, "shape": list(arr.shape), "datatype": _v2_type(arr),
            "data": arr.reshape(-1).tolist()}  # fmt: skip


def encode_outputs(predictions: Any) -> list[dict[str, Any]]:
    """V2 output tensors for a pyfunc's predictions (as MLServer's MLflow runtime names them)."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return [_tensor(str(col), predictions[col].to_numpy()) for col in predictions.columns]
    if isinstance(predictions, pd.Series):
        return [_tensor("output-1", predictions.to_numpy())]
    if isinstance(predictions, dict):
        return [_tensor(str(k), v) for k, v in predictions.items()]
    return [_tensor("output-1", predictions)]


def infer_response(name: str, version: str | None, request_id: Any, predictions: Any) -> Reply:
    """The ``infer`` answer."""
    doc: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "id": str(request_id) if request_id is not None else str(uuid.uuid4()),
        "parameters": {},
        "outputs": encode_outputs(predictions),
    }
    return ok(doc)
