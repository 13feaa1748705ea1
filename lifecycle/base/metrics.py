"""Model quality metrics: one definition for the promotion gates and for monitoring, so that
the same data gives the same numbers wherever a threshold is applied.

Classification: ``accuracy``, and ``f1``, ``precision``, ``recall`` as **macro** averages
(every class counts the same, whatever its size). Regression: ``rmse``, ``mae``, ``r2``.
Rows whose label or prediction is missing are left out and counted in ``labelled_rows``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Metric name -> True when higher is better.
CLASSIFICATION_METRICS = {"accuracy": True, "f1": True, "precision": True, "recall": True}
REGRESSION_METRICS = {"rmse": False, "mae": False, "r2": True}
#: Metrics where a higher value is better; the others (rmse, mae) are better when lower.
HIGHER_IS_BETTER = frozenset(
    k for k, v in {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}.items() if v
)
DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse"}
#: How classification's f1, precision and recall average over classes.
AVERAGE = "macro"
#: Integer labels with at most this many distinct values are classes.
MAX_CLASSES = 50
#: Float labels that are all whole numbers, with at most this many values, are classes.
DISCRETE_MAX_VALUES = 20


def metrics_for(task: str) -> dict[str, bool]:
    """The metrics of ``task`` (name -> higher is better)."""
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )


def infer_task(labels: Any) -> str:
    """``classification`` for text, bool or few whole-number labels, else ``regression``."""
    series = pd.Series(labels).dropna()
    if not _is_number(series):
        return "classification"
    if pd.api.types.is_integer_dtype(series.dtype):
        return "classification" if series.nunique() <= MAX_CLASSES else "regression"
    values = series.to_numpy(dtype="float64")
    integral = bool(len(values)) and bool(np.all(np.equal(np.mod(values, 1), 0)))
    if integral and len(np.unique(values)) <= DISCRETE_MAX_VALUES:
        return "classification"
    return "regression"


def task_metrics(task: str, labels: Any, predictions: Any) -> dict[str, float]:
    """The metrics of ``task`` for one set of predictions (unrounded), plus ``labelled_rows``.

    Returns an empty dict when no row has both a label and a prediction.
    """
    from sklearn import metrics as skm

    y = pd.Series(labels).reset_index(drop=True)
    p = pd.Series(np.asarray(predictions)).reset_index(drop=True)
    keep = y.notna() & p.notna()
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return {}
    out: dict[str, float] = {"labelled_rows": float(len(y))}
    if task == "classification":
        if y.dtype != p.dtype:
            # Labels and predictions of different dtypes (1 vs 1.0 vs "1") compare as text.
            y = y.map(_label_text)
            p = p.map(_label_text)
        out["accuracy"] = float(skm.accuracy_score(y, p))
        out["f1"] = float(skm.f1_score(y, p, average=AVERAGE, zero_division=0))
        out["precision"] = float(skm.precision_score(y, p, average=AVERAGE, zero_division=0))
        out["recall"] = float(skm.recall_score(y, p, average=AVERAGE, zero_division=0))
    else:
        yv = pd.to_numeric(y, errors="coerce").to_numpy(dtype="float64")
        pv = pd.to_numeric(p, errors="coerce").to_numpy(dtype="float64")
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(yv, pv)))
        out["mae"] = float(skm.mean_absolute_error(yv, pv))
        out["r2"] = float(skm.r2_score(yv, pv))
    return out


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
