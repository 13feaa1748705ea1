"""Model quality metrics: one definition for the promotion gates and for monitoring, so that
the same data gives the same numbers wherever a threshold is applied, and each name means one
thing.

Classification: ``accuracy``; ``f1_macro``, ``precision_macro``, ``recall_macro`` (every class
weighs the same) and ``f1_weighted`` (classes weighed by their support). For two classes,
``f1``, ``precision`` and ``recall`` are those of the **positive class**: the larger label in
sorted order (1 over 0, True over False, the later name), as scikit-learn's ``LabelBinarizer``
takes it. For more classes ``f1``, ``precision`` and ``recall`` are kept as deprecated aliases
of the macro averages (their meaning before this distinction); name the average instead.
Regression: ``rmse``, ``mae``, ``r2``. Rows whose label or prediction is missing are left out
and counted in ``labelled_rows``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Metric name -> True when higher is better.
CLASSIFICATION_METRICS = {
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "f1_macro": True,
    "precision_macro": True,
    "recall_macro": True,
    "f1_weighted": True,
}
#: Names that are the positive class's for two classes and deprecated macro aliases beyond.
POSITIVE_CLASS_METRICS = ("f1", "precision", "recall")
REGRESSION_METRICS = {"rmse": False, "mae": False, "r2": True}
#: Metrics where a higher value is better; the others (rmse, mae) are better when lower.
HIGHER_IS_BETTER = frozenset(
    k for k, v in {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}.items() if v
)
DEFAULT_METRIC = {"classification": "accuracy", "regression": "rmse"}
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
        for average in ("macro", "weighted"):
            prf = skm.precision_recall_fscore_support(y, p, average=average, zero_division=0)
            if average == "macro":
                out["precision_macro"], out["recall_macro"] = float(prf[0]), float(prf[1])
            out[f"f1_{average}"] = float(prf[2])
        classes = positive_class(y, p)
        if classes is None:  # more (or fewer) than two classes: the deprecated aliases
            out["f1"], out["precision"] = out["f1_macro"], out["precision_macro"]
            out["recall"] = out["recall_macro"]
        else:
            prf = skm.precision_recall_fscore_support(
                y, p, average="binary", pos_label=classes, zero_division=0
            )
            out["precision"], out["recall"], out["f1"] = (float(v) for v in prf[:3])
        order = ["labelled_rows", *CLASSIFICATION_METRICS]
        out = {k: out[k] for k in order if k in out}
    else:
        yv = pd.to_numeric(y, errors="coerce").to_numpy(dtype="float64")
        pv = pd.to_numeric(p, errors="coerce").to_numpy(dtype="float64")
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(yv, pv)))
        out["mae"] = float(skm.mean_absolute_error(yv, pv))
        out["r2"] = float(skm.r2_score(yv, pv))
    return out


def positive_class(labels: Any, predictions: Any) -> Any:
    """The positive class when labels and predictions hold exactly two classes (the larger in
    sorted order), else None."""
    seen = pd.unique(pd.concat([pd.Series(labels), pd.Series(predictions)], ignore_index=True))
    if len(seen) != 2:
        return None
    try:
        return sorted(seen)[-1]
    except TypeError:  # mixed types: order as text
        return sorted(seen, key=str)[-1]


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
