"""The Open Inference Protocol (V2, REST) on the scoring server: health, server and model
metadata (inputs and outputs from the signature, with V2 datatypes), readiness, and ``infer``
with one named tensor per signature column or one 2-D tensor in column order.

Predictions come back as MLServer's MLflow runtime encodes them: a DataFrame as one output
per column, anything else as one tensor named ``output-1``. Errors are ``{"error": "..."}``
with a 4xx status, as the protocol specifies.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import operator
import os
import re
from collections.abc import Sequence
from itertools import chain
from typing import Any

import msgspec
import numpy as np

from lifecycle import __version__
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

_V2_OF_NUMPY = {np.dtype(t): name for name, t in _NUMPY.items() if name != "BOOL"}

#: Ids for requests that sent none: UUID-4-shaped strings, a prefix of 74 random bits per
#: process, then a counter from a random start: unique without a system call per request.
_ids: dict[str, Any] = {}


def _new_id_source() -> None:
    r = os.urandom(13)
    _ids["prefix"] = (
        f"{r[:4].hex()}-{r[4:6].hex()}-4{r[6:8].hex()[1:]}-{'89ab'[r[8] % 4]}{r[9:11].hex()[1:]}-"
    )
    _ids["count"] = itertools.count(int.from_bytes(r[11:13], "big") << 16)


_new_id_source()
os.register_at_fork(after_in_child=_new_id_source)  # a forked worker draws its own


def request_id(sent: Any) -> str:
    """The ``id`` of an answer: the request's own, else a fresh unique one."""
    if sent is not None:
        return str(sent)
    return f"{_ids['prefix']}{next(_ids['count']) % 2**48:012x}"


#: /v2/models/NAME[/versions/V][/ready|/infer]
ROUTE = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<op>/ready|/infer)?/?$"
)
#: The server-level routes' answers (GET only).
SERVER_DOCS: dict[str, dict[str, Any]] = {
    "/v2/health/live": {"live": True},
    "/v2/health/ready": {"ready": True},
    "/v2": {"name": "mlflow-lifecycle", "version": __version__, "extensions": []},
}


def route(path: str) -> tuple[str | None, str | None, str] | None:
    """What a ``/v2`` path asks for: ``(None, None, key of SERVER_DOCS)`` for the server's
    routes, ``(model name, version or None, "" | "/ready" | "/infer")`` for a model's, None
    for no V2 route. Cached for short paths: clients repeat the same few."""
    return _route(path) if len(path) <= 512 else _route.__wrapped__(path)


@functools.lru_cache(maxsize=256)
def _route(path: str) -> tuple[str | None, str | None, str] | None:
    key = path.rstrip("/") or path
    if key in SERVER_DOCS:
        return None, None, key
    m = ROUTE.match(path)
    if m is None:
        return None
    return m["name"], m["version"], m["op"] or ""


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
    name: str,
    version: str | None,
    columns: list[tuple[str, str]],
    output_schema: Any = None,
) -> dict[str, Any]:
    """``GET /v2/models/NAME``: the model's inputs (``signature_columns``) and outputs (from
    the signature), described as MLServer's MLflow runtime describes them (a column is a
    ``[-1, 1]`` tensor; content types ``np``/``str``; the model's own ``pd``), except that
    an unnamed output is called ``output-1`` as ``infer`` calls it (MLServer's metadata says
    ``output-0`` and its ``infer`` answers ``output-1``)."""
    inputs = [
        {"name": col, "datatype": dtype, "shape": [-1, 1],
         "parameters": {"content_type": "str" if dtype == "BYTES" else "np"}}
        for col, dtype in columns
    ]  # fmt: skip
    return {
        "name": name,
        "versions": [version] if version else [],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": _output_tensors(output_schema),
        "parameters": {"content_type": "pd" if columns else "np"},
    }


def _output_tensors(schema: Any) -> list[dict[str, Any]]:
    if schema is None:
        return []
    out = []
    for idx, spec in enumerate(getattr(schema, "inputs", []) or []):
        name = getattr(spec, "name", None) or f"output-{idx + 1}"
        shape = getattr(spec, "shape", None)
        if shape is not None:  # a TensorSpec
            dtype = _v2_type(np.empty(0, dtype=spec.type))
            shape = list(shape)
        else:
            kind = getattr(spec.type, "name", str(spec.type))
            dtype = V2_TYPES.get(str(kind).lower(), "BYTES")
            shape = [-1, 1]
        content = "str" if dtype == "BYTES" else "np"
        out.append({"name": str(name), "datatype": dtype, "shape": shape,
                    "parameters": {"content_type": content}})  # fmt: skip
    return out


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


class FastInfer:
    """A V2 ``infer`` request queued on the fast path: what its answer needs (the body is
    decoded again only if the fast path cannot answer after all)."""

    __slots__ = ("body", "name", "sent_id")

    def __init__(self, name: str, sent_id: Any, body: bytes) -> None:
        self.name = name
        self.sent_id = sent_id
        self.body = body


#: Datatypes the fast path decodes itself: ``FP64`` (JSON numbers) and ``INT64`` (JSON
#: integers), each value exact in float64, so the matrix is what :func:`_array` would make.
#: Anything else (FP32's rounding, BOOL, BYTES, out-of-range integers) goes the general way.
_FAST_TYPES = frozenset({"FP64", "INT64"})
_NUMBER_TYPES = frozenset({float, int})
_EXACT_INT = 2**53
_TOP_KEYS = frozenset({"id", "inputs"})
_INT_ONLY = {int}
_NAME = operator.itemgetter("name")
_DATA = operator.itemgetter("data")
_SHAPE = operator.itemgetter("shape")
_DATATYPE = operator.itemgetter("datatype")


def _plain_numbers(flat: list[Any]) -> bool:
    """Whether every value is a JSON number, integers exact in float64."""
    types = set(map(type, flat))
    if not types <= _NUMBER_TYPES:
        return False
    return int not in types or all(-_EXACT_INT < v < _EXACT_INT for v in flat if type(v) is int)


@functools.lru_cache(maxsize=16)
def _as_list(columns: tuple[str, ...]) -> list[str]:
    return list(columns)


def _in_column_order(names: list[Any], inputs: Sequence[Any], columns: tuple[str, ...]) -> Any:
    """The inputs named by the signature's columns, in its order (extras dropped; the last
    of a repeated name wins, as in a JSON object).

    Raises:
        KeyError: a column without its input.
        TypeError: an unhashable name.
    """
    if names == _as_list(columns):  # the signature's order, no extras: the usual request
        return inputs
    return _picker(columns)(dict(zip(names, inputs, strict=True)))


@functools.lru_cache(maxsize=16)
def _picker(columns: tuple[str, ...]) -> Any:
    """A function picking the signature's inputs, in its order, from a dict by name."""
    pick = operator.itemgetter(*columns)
    return pick if len(columns) > 1 else lambda d: (pick(d),)


def _column_matrix(
    datas: list[Any], shapes: list[Any], types: list[Any], int_shapes: bool = False
) -> np.ndarray | None:
    """The matrix of one tensor per column (in column order), or None unless each is a
    plain numeric ``FP64``/``INT64`` ``[rows]`` or ``[rows, 1]`` tensor of the same rows
    (``int_shapes``: the shapes' sizes are known to be ints)."""
    try:
        kinds = set(types)
        lengths = set(map(len, datas))
    except TypeError:  # an unhashable datatype, data without a length
        return None
    if not kinds <= _FAST_TYPES:
        return None
    rows = lengths.pop()
    if lengths or rows <= 0:
        return None
    if shapes.count([rows]) + shapes.count([rows, 1]) != len(shapes):
        return None
    # Equal in value to [rows] or [rows, 1]; sizes must be ints, not 1.0 or True.
    if not int_shapes and set(map(type, chain.from_iterable(shapes))) != _INT_ONLY:
        return None
    # Data that are not lists (text, objects) yield text here, which is refused.
    flat = list(chain.from_iterable(datas))
    if not _plain_numbers(flat) or not math.isfinite(sum(flat)):  # NaN, inf (or overflow)
        return None
    if "INT64" in kinds and any(
        t == "INT64" and float in set(map(type, d)) for t, d in zip(types, datas, strict=True)
    ):
        return None
    matrix = np.array(flat, dtype=np.float64)
    return matrix.reshape(1, -1) if rows == 1 else matrix.reshape(len(datas), rows).T


class _Input(msgspec.Struct, gc=False):
    name: str
    shape: list[int]
    datatype: str
    data: list[int | float]


class _Request(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    inputs: list[_Input]
    id: str | None = None


#: The usual ``infer`` request, typed: decoded straight into slotted objects (no dicts),
#: with every type checked by msgspec; any other request fails here and is decoded as JSON.
_REQUEST = msgspec.json.Decoder(_Request)
_ATTR_NAME = operator.attrgetter("name")
_ATTR_DATA = operator.attrgetter("data")
_ATTR_SHAPE = operator.attrgetter("shape")
_ATTR_TYPE = operator.attrgetter("datatype")


def fast_request(body: bytes, columns: tuple[str, ...]) -> tuple[np.ndarray, Any] | None:
    """``(matrix, the request's id)`` for the usual plain numeric ``infer`` body — one
    ``FP64``/``INT64`` tensor per column, string names, ``id`` a string or absent — decoded
    from the bytes without building the JSON document; None for anything else, which
    :func:`fast_matrix` or the general path then decode. Same matrix as :func:`fast_matrix`
    of the same request (msgspec keeps integers exact and refuses what json.loads reads
    differently: NaN literals, numbers past float64, lone surrogates)."""
    if not columns:
        return None
    try:
        req = _REQUEST.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    inputs = req.inputs
    if not inputs:
        return None
    try:
        picked = _in_column_order(list(map(_ATTR_NAME, inputs)), inputs, columns)
    except KeyError:
        return None
    datas = list(map(_ATTR_DATA, picked))
    shapes = list(map(_ATTR_SHAPE, picked))
    # msgspec checked the shapes: list[int] takes no 1.0 and no true.
    matrix = _column_matrix(datas, shapes, list(map(_ATTR_TYPE, picked)), int_shapes=True)
    return None if matrix is None else (matrix, req.id)


def fast_matrix(obj: Any, columns: tuple[str, ...]) -> np.ndarray | None:
    """A float64 matrix in ``columns`` order from a plain numeric ``infer`` request, or None.

    Decoded as :func:`decode_inputs` decodes it (one tensor per column, ``[N]`` or
    ``[N, 1]``, extra inputs ignored; or one ``[N, len(columns)]`` tensor, flat or nested),
    so the fast path answers what the general path would. Only ``FP64`` numbers and
    ``INT64`` integers (exact in float64) with finite values, at least one row, shapes of
    plain integers and no top-level key but ``id`` and ``inputs`` qualify (an input's
    ``parameters`` are ignored, as :func:`decode_inputs` ignores them); anything else
    returns None and goes through the general path, errors included.
    """
    if type(obj) is not dict or not columns or not obj.keys() <= _TOP_KEYS:
        return None
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        return None
    try:
        # One C-level pass per field over the signature's inputs (no Python loop per input).
        picked = _in_column_order(list(map(_NAME, inputs)), inputs, columns)
        datas = list(map(_DATA, picked))
        shapes = list(map(_SHAPE, picked))
        types = list(map(_DATATYPE, picked))
    except (KeyError, TypeError):  # a column without its input, a field missing, unhashable
        picked = None
    if picked is not None:
        return _column_matrix(datas, shapes, types)
    if len(inputs) == 1:
        inp = inputs[0]
        if type(inp) is not dict:
            return None
        shape, data, width = inp.get("shape"), inp.get("data"), len(columns)
        datatype = inp.get("datatype")
        if type(datatype) is not str or datatype not in _FAST_TYPES:
            return None
        if type(data) is not list or not data:
            return None
        if type(data[0]) is list:  # nested rows
            if any(type(r) is not list or len(r) != width for r in data):
                return None
            data = [v for r in data for v in r]
        if type(shape) is not list or len(shape) != 2 or set(map(type, shape)) != _INT_ONLY:
            return None
        if shape[1] != width or shape[0] * width != len(data):
            return None
        if not _plain_numbers(data):
            return None
        if datatype == "INT64" and float in set(map(type, data)):
            return None
        if not math.isfinite(sum(data)):
            return None
        return np.array(data, dtype=np.float64).reshape(shape[0], width)
    return None


def fast_infer_reply(name: str, version: str | None, sent_id: Any, preds: Any) -> Reply:
    """:func:`infer_response` for the fast path's predictions (same bytes for a plain
    numeric array; anything else goes through :func:`infer_response`)."""
    if not isinstance(preds, np.ndarray) or preds.ndim != 1 or preds.dtype.kind not in "iuf":
        return infer_response(name, version, sent_id, preds)
    datatype = _V2_OF_NUMPY.get(preds.dtype)
    if datatype is None or (preds.dtype.kind == "f" and not np.isfinite(preds).all()):
        return infer_response(name, version, sent_id, preds)
    # A generated id is hex and dashes: no escaping needed.
    rid = json.dumps(str(sent_id)) if sent_id is not None else f'"{request_id(None)}"'
    # json.dumps of the same document, its constant parts rendered once per model.
    head = _head(name, version)
    body = (
        f'{head}{rid}, "parameters": {{"content_type": "np"}}, "outputs": '
        f'[{{"name": "output-1", "shape": [{len(preds)}, 1], "datatype": "{datatype}", '
        f'"data": {json.dumps(preds.tolist())}, "parameters": {{"content_type": "np"}}}}]}}'
    )
    return Reply(200, body.encode())


@functools.lru_cache(maxsize=64)
def _head(name: str, version: str | None) -> str:
    return f'{{"model_name": {json.dumps(name)}, "model_version": {json.dumps(version)}, "id": '


def _v2_type(arr: np.ndarray) -> str:
    kind = arr.dtype
    if kind == np.bool_:
        return "BOOL"
    for name, np_type in _NUMPY.items():
        if kind == np.dtype(np_type):
            return name
    return "BYTES"


def _tensor(name: str, values: Any, content_type: str | None = "np") -> dict[str, Any]:
    """One output tensor, encoded as MLServer's codecs do: a 1-D array gets its batch
    dimension (``[N]`` -> ``[N, 1]``), NaN becomes null, text is BYTES."""
    arr = np.asarray(values)
    shape = list(arr.shape) if arr.ndim > 1 else [*arr.shape, 1]
    out: dict[str, Any] = {"name": name, "shape": shape}
    if arr.dtype == object or arr.dtype.kind in "USM":
        out["datatype"] = "BYTES"
        out["data"] = [None if _is_nan(v) else str(v) for v in arr.reshape(-1).tolist()]
        if content_type == "pd":
            content_type = "str"
    else:
        out["datatype"] = _v2_type(arr)
        flat = arr.reshape(-1).tolist()
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            flat = [None if v != v else v for v in flat]
        out["data"] = flat
        if content_type == "pd":
            content_type = None
    if content_type is not None:
        out["parameters"] = {"content_type": content_type}
    return out


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def encode_outputs(predictions: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """V2 output tensors for a pyfunc's predictions and the response's parameters, as
    MLServer's MLflow runtime encodes them: a DataFrame one tensor per column (``pd``), a
    dict one per key, anything else one tensor ``output-1`` (``np``)."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        outputs = [_tensor(str(c), predictions[c].to_numpy(), "pd") for c in predictions.columns]
        return outputs, {"content_type": "pd"}
    if isinstance(predictions, dict):
        return [_tensor(str(k), v) for k, v in predictions.items()], {}
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_numpy()
    return [_tensor("output-1", predictions)], {"content_type": "np"}


def infer_response(name: str, version: str | None, sent_id: Any, predictions: Any) -> Reply:
    """The ``infer`` answer."""
    doc: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "id": request_id(sent_id),
    }
    outputs, parameters = encode_outputs(predictions)
    doc["parameters"] = parameters
    doc["outputs"] = outputs
    return ok(doc)
