"""Calling a model on a chunk so that one bad row never fails the rest: a failing call is\nbisected down to the rows the model refuses, which become rejects with the model's reason;\npredictions as named Arrow-ready columns."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lifecycle.base.errors import ScoringError


def to_arrow(values: Any) -> pa.Array:
    arr = np.asarray(values)
    if arr.dtype == object:
        return pa.array(list(arr), from_pandas=True)
    return pa.array(arr, from_pandas=True)


def predict_isolating_errors(
    model: Any, frame: pd.DataFrame | np.ndarray
) -> tuple[dict[str, Any], dict[int, str]]:
    """Predict ``frame``; when the model fails, bisect to reject only the rows that fail alone.

    ``frame`` is a DataFrame (pyfunc) or a NumPy matrix (the lean path).

    Returns:
        (output column -> values for the rows that scored, frame position -> error reason).
    """
    if len(frame) == 0:
        return {}, {}
    try:
        return prediction_columns(model.predict(frame), len(frame)), {}
    except Exception as exc:
        if len(frame) == 1:
            return {}, {
                0: "model error: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            }
    mid = len(frame) // 2
    if isinstance(frame, np.ndarray):
        head, tail = frame[:mid], frame[mid:]
    else:
        head, tail = (
            frame.iloc[:mid].reset_index(drop=True),
            frame.iloc[mid:].reset_index(drop=True),
        )
    left, lerr = predict_isolating_errors(model, head)
    right, rerr = predict_isolating_errors(model, tail)
    errors = {**lerr, **{mid + k: v for k, v in rerr.items()}}
    merged: dict[str, Any] = {}
    for name in list(left) + [k for k in right if k not in left]:
        parts = [p[name] for p in (left, right) if name in p]
        merged[name] = np.concatenate([np.asarray(p) for p in parts])
    return merged, errors


def prediction_columns(pred: Any, n: int) -> dict[str, Any]:
    """The model's output as named columns: its own for a DataFrame, else ``prediction``."""
    if isinstance(pred, pd.DataFrame):
        return {str(c): pred[c].to_numpy() for c in pred.columns}
    if isinstance(pred, pd.Series):
        return {"prediction": pred.to_numpy()}
    if isinstance(pred, dict):
        return {str(k): np.asarray(v) for k, v in pred.items()}
    arr = np.asarray(pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        if len(arr) != n:
            raise ScoringError(f"model returned {len(arr)} predictions for {n} rows")
        return {"prediction": arr}
    if arr.ndim == 2:
        return {f"prediction_{i}": arr[:, i] for i in range(arr.shape[1])}
    return {"prediction": [json.dumps(x.tolist()) for x in arr]}
