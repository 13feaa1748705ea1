"""The worker that runs a model's pyfunc inside the model's own environment, and the wire
format both sides use. Data crosses as Arrow IPC streams; no pickle crosses the boundary.

This file is run by path with the environment's interpreter (``python -I env_worker.py``),
where the toolkit is not installed: it imports only the standard library, numpy, pandas
and pyarrow. The toolkit imports the same file for the frame functions, so both sides
share one definition.

Frame: 4-byte big-endian length + JSON header, 8-byte big-endian length + Arrow payload
(empty when there is none). Requests: ``{"op": "predict", "params": ...}`` + the input;
``{"op": "close"}``. Answers: ``{"ok": true, "kind": ...}`` + the prediction, or
``{"ok": false, "error": CLASS, "message": ...}``.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import math
import os
import struct
import sys
from typing import IO, Any

#: Column-name prefix of the masks that keep float NaN apart from None in object columns
#: (Arrow has one null; AutoML's featurizer maps NaN to 'nan' but None to 'None').
NAN_MASK = "\x00nan\x00"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle")


class WorkerDied(Exception):
    """The other side closed the pipe (the process ended)."""


# ------------------------------------------------------------------------ frames


def write_frame(out: IO[bytes], header: dict[str, Any], payload: bytes = b"") -> None:
    """Write one frame and flush."""
    head = json.dumps(header).encode("utf-8")
    out.write(struct.pack(">I", len(head)) + head + struct.pack(">Q", len(payload)))
    if payload:
        out.write(payload)
    out.flush()


def _read_exact(inp: IO[bytes], n: int) -> bytes:
    chunks = []
    while n:
        chunk = inp.read(n)
        if not chunk:
            raise WorkerDied("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(inp: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    """Read one frame; raises :class:`WorkerDied` at end of stream."""
    (n,) = struct.unpack(">I", _read_exact(inp, 4))
    header = json.loads(_read_exact(inp, n))
    (m,) = struct.unpack(">Q", _read_exact(inp, 8))
    return header, _read_exact(inp, m) if m else b""


# ------------------------------------------------------------------- tables


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def frame_to_arrow(df: Any) -> tuple[list[Any], bytes]:
    """(original column names, Arrow IPC stream) of the DataFrame ``df``; NaN kept apart
    from None in object columns by a mask column."""
    import pandas as pd
    import pyarrow as pa

    names = list(df.columns)
    out = df.copy(deep=False)
    out.columns = [str(c) for c in names]
    for col in list(out.columns):
        dtype = out[col].dtype
        if dtype.kind == "O" or pd.api.types.is_string_dtype(dtype):
            missing = out[col].isna().to_numpy()
            if missing.any():  # which of the missing values are NaN (not None)
                mask = missing.copy()
                mask[missing] = [_is_nan(v) for v in out[col].to_numpy()[missing]]
                if mask.any():
                    out[NAN_MASK + col] = mask
    table = pa.Table.from_pandas(out, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return [c if isinstance(c, (str, int, float)) else str(c) for c in names], sink.getvalue()


def arrow_to_frame(payload: bytes, names: list[Any]) -> Any:
    """The DataFrame :func:`frame_to_arrow` encoded."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    table = pa.ipc.open_stream(io.BytesIO(payload)).read_all()
    df = table.to_pandas()
    for i, col in enumerate(table.column_names):
        kind = table.schema.field(i).type
        if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and df[col].dtype != object:
            # Text as Python objects, nulls as None, whatever the pandas version's default.
            df[col] = pd.Series(table.column(i).to_pylist(), dtype=object, index=df.index)
    for col in [c for c in df.columns if c.startswith(NAN_MASK)]:
        target = col[len(NAN_MASK) :]
        mask = df.pop(col).to_numpy(dtype=bool)
        values = df[target].to_numpy(dtype=object, copy=True)
        values[mask] = np.nan
        df[target] = pd.Series(values, dtype=object, index=df.index)
    df.columns = names
    return df


def encode_result(result: Any) -> tuple[dict[str, Any], bytes]:
    """A prediction (ndarray, Series, DataFrame, list) as a header and Arrow payload."""
    import numpy as np
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        names, payload = frame_to_arrow(result)
        return {"kind": "dataframe", "columns": names}, payload
    if isinstance(result, pd.Series):
        names, payload = frame_to_arrow(result.to_frame(name="0"))
        return {"kind": "series", "name": result.name}, payload
    if isinstance(result, list):
        names, payload = frame_to_arrow(pd.DataFrame({"0": pd.Series(result, dtype=object)}))
        return {"kind": "list"}, payload
    arr = np.asarray(result)
    if arr.ndim == 1:
        names, payload = frame_to_arrow(pd.DataFrame({"0": arr}))
        return {"kind": "ndarray"}, payload
    if arr.ndim == 2:
        frame = pd.DataFrame({str(i): arr[:, i] for i in range(arr.shape[1])})
        names, payload = frame_to_arrow(frame)
        return {"kind": "ndarray2d", "width": arr.shape[1]}, payload
    raise TypeError(f"a prediction of shape {arr.shape} cannot cross to the toolkit")


def decode_result(header: dict[str, Any], payload: bytes) -> Any:
    """The prediction :func:`encode_result` encoded."""
    kind = header["kind"]
    if kind == "dataframe":
        return arrow_to_frame(payload, header["columns"])
    if kind == "ndarray2d":
        frame = arrow_to_frame(payload, [str(i) for i in range(header["width"])])
        return frame.to_numpy()
    frame = arrow_to_frame(payload, ["0"])
    if kind == "series":
        return frame["0"].rename(header.get("name"))
    if kind == "list":
        return frame["0"].tolist()
    return frame["0"].to_numpy()


# ------------------------------------------------------------------- worker


def _load(model_dir: str, conf: dict[str, Any], allow_pickle: bool) -> Any:
    if not allow_pickle:
        for root, _dirs, files in os.walk(model_dir):
            for name in files:
                if name.lower().endswith(PICKLE_SUFFIXES):
                    raise PermissionError(
                        f"refusing to load '{os.path.join(root, name)}': unpickling runs code "
                        "and no consent (--trust-pickle) was given"
                    )
    code = conf.get("code")
    if code:
        sys.path.insert(0, os.path.join(model_dir, code))
    data = os.path.join(model_dir, conf["data"]) if conf.get("data") else model_dir
    module = importlib.import_module(conf["loader_module"])
    if conf.get("model_config"):
        return module._load_pyfunc(data, conf["model_config"])
    return module._load_pyfunc(data)


def _accepts_params(fn: Any) -> bool:
    try:
        return "params" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def serve(model_dir: str, conf: dict[str, Any], allow_pickle: bool) -> int:
    """Load the model, answer requests on stdin/stdout until ``close`` or end of input."""
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the model prints goes to stderr, never into the frames
    try:
        impl = _load(model_dir, conf, allow_pickle)
        predict = getattr(impl, conf.get("predict_fn") or "predict")
    except BaseException as exc:
        write_frame(out, {"ok": False, "error": type(exc).__name__, "message": str(exc)[:4000]})
        return 2
    write_frame(out, {"ok": True, "ready": True, "python": sys.version.split()[0]})
    with_params = _accepts_params(predict)
    while True:
        try:
            header, payload = read_frame(inp)
        except WorkerDied:
            return 0
        if header.get("op") == "close":
            return 0
        try:
            data = arrow_to_frame(payload, header["columns"])
            params = header.get("params")
            result = predict(data, params=params) if with_params else predict(data)
            head, body = encode_result(result)
            write_frame(out, {"ok": True, **head}, body)
        except Exception as exc:
            write_frame(out, {"ok": False, "error": type(exc).__name__, "message": str(exc)[:4000]})


if __name__ == "__main__":
    _conf = json.loads(sys.argv[2])
    sys.exit(serve(sys.argv[1], _conf, "--allow-pickle" in sys.argv[3:]))
