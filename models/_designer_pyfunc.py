"""Azure ML Designer scoring, rebuilt with plain scikit-learn objects (an MLflow pyfunc).

This file is copied into every imported Designer model as its code ("models from code"),
so it imports nothing from this project: only NumPy, pandas, SciPy, skops and MLflow.

The model's artifacts are ``spec`` (JSON: task, feature columns in training order, the
numeric encoders and their options, the string columns) and ``state`` (skops: the fitted
estimator, the label ``OrdinalEncoder``, the per-column ``MinMaxScaler``/``StandardScaler``
and ``OneHotEncoder`` objects). Scoring follows Designer's learner step by step:

1. ``df[features]`` (training order);
2. numeric block: one column per numeric feature in spec order, each the encoder's
   transform (min-max: +-inf -> NaN, integers -> float; z-score; constant training column:
   0 with ``constant_column_option`` else NaN; unfitted: NaN; no encoder: raw values),
   then ``np.nan_to_num``;
3. string block: per string column, values as strings with missing -> ``#NAN``, one-hot
   encoded (sparse), stacked in spec order;
4. matrix: ``hstack([numeric, string])`` as CSR when both exist, else the one block;
5. ``predict_proba`` -> label index = argmax, mapped back through the label encoder;
   binary: ``Scored Labels``, ``Scored Probabilities`` (probability of the last class in
   ``estimator.classes_``); multiclass: ``Scored Probabilities_<label>`` per label, then
   ``Scored Labels``; regression: ``predict`` -> ``Scored Labels``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse

NAN_STR = "#NAN"
SCORED_LABELS = "Scored Labels"
SCORED_PROBABILITIES = "Scored Probabilities"
SPEC_FORMAT = "lifecycle-designer-scoring/1"


def _numeric_values(series: pd.Series) -> np.ndarray:
    """A numeric column as float64, missing values (incl. pandas NA) as NaN."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _inf_to_nan(values: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[np.isinf(out)] = np.nan
    return out


def encode_numeric(series: pd.Series, entry: dict[str, Any], scaler: Any) -> np.ndarray:
    """One numeric feature as Designer's normaliser encodes it (before ``nan_to_num``)."""
    values = _numeric_values(series)
    kind = entry.get("encoder")
    if kind is None:
        return values
    std = entry.get("std")
    constant = std is not None and std < 1e-9
    if kind == "minmax":
        values = _inf_to_nan(values)
        if entry.get("unfitted"):
            return np.full(values.shape, np.nan)
        if constant:
            return (
                values * 0.0
                if entry.get("constant_column_option")
                else np.full_like(values, np.nan)
            )
        return np.asarray(scaler.transform(values.reshape(-1, 1))).reshape(-1)
    if kind == "zscore":
        if constant:
            return values * 0.0 if entry.get("constant_column_option") else values * np.nan
        values = _inf_to_nan(values)
        return np.asarray(scaler.transform(values.reshape(-1, 1))).reshape(-1)
    raise ValueError(f"unknown numeric encoder '{kind}' in the scoring spec")


def _as_category_strings(series: pd.Series) -> np.ndarray:
    """A string feature as Designer feeds its one-hot encoder: strings, missing -> '#NAN'."""
    out = np.empty(len(series), dtype=object)
    for i, value in enumerate(series.astype(object).tolist()):
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            out[i] = NAN_STR
        elif isinstance(value, str):
            out[i] = value
        else:
            out[i] = str(value)
    return out


def build_matrix(df: pd.DataFrame, spec: dict[str, Any], state: dict[str, Any]) -> Any:
    """The matrix Designer feeds its estimator for the rows of ``df``."""
    missing = [c for c in spec["features"] if c not in df.columns]
    if missing:
        raise ValueError(f"input lacks feature column(s): {', '.join(missing)}")
    x = df[spec["features"]]
    numeric = spec["numeric"]
    strings = spec["strings"]
    num = np.zeros((len(x), len(numeric)), dtype=np.float64)
    scalers = state.get("scalers") or {}
    for j, entry in enumerate(numeric):
        col = entry["column"]
        num[:, j] = np.nan_to_num(encode_numeric(x[col], entry, scalers.get(col)))
    blocks = []
    onehot = state.get("onehot") or {}
    for col in strings:
        values = _as_category_strings(x[col]).reshape(-1, 1)
        blocks.append(onehot[col].transform(values))
    if blocks:
        str_block = scipy.sparse.hstack(blocks, format="csr")
        if numeric:
            return scipy.sparse.hstack([scipy.sparse.csr_matrix(num), str_block], format="csr")
        return str_block
    return num


def score(df: pd.DataFrame, spec: dict[str, Any], state: dict[str, Any]) -> pd.DataFrame:
    """Designer's scored columns for the rows of ``df``."""
    matrix = build_matrix(df, spec, state)
    estimator = state["estimator"]
    task = spec["task"]
    if task == "regression":
        return pd.DataFrame({SCORED_LABELS: estimator.predict(matrix)})
    prob = estimator.predict_proba(matrix)
    label_index = prob.argmax(axis=1)
    encoder = state["label_encoder"]
    labels = encoder.inverse_transform(label_index.reshape(-1, 1)).reshape(-1)
    if task == "binary":
        classes = getattr(estimator, "classes_", None)
        column = classes.size - 1 if classes is not None and classes.size != 0 else 1
        if prob.ndim == 2:
            prob = prob[:, column]
        return pd.DataFrame({SCORED_LABELS: labels, SCORED_PROBABILITIES: prob})
    mapping = list(encoder.categories_[0])
    names = [f"{SCORED_PROBABILITIES}_{label}" for label in mapping]
    out = pd.DataFrame(prob, columns=names)
    out[SCORED_LABELS] = labels
    return out


def load_state(spec_path: str, state_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the spec (JSON) and the scikit-learn state (skops, only the declared types)."""
    import skops.io

    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"unknown Designer scoring spec format {spec.get('format')!r}")
    state = skops.io.load(state_path, trusted=spec.get("skops_trusted_types") or [])
    return spec, state


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - MLflow is always present where models load
    PythonModel = object  # type: ignore[misc,assignment]


class DesignerScoringModel(PythonModel):  # type: ignore[misc,valid-type]
    """MLflow pyfunc: Designer's scoring over the ``spec`` and ``state`` artifacts."""

    # The signature comes from Designer's schema, not from type hints: tell MLflow not to
    # look for (and warn about) type hints on predict.
    _skip_type_hint_validation = True

    # No type hints on these two: MLflow would try to derive a signature from them.
    def load_context(self, context):  # type: ignore[no-untyped-def]
        self.spec, self.state = load_state(context.artifacts["spec"], context.artifacts["state"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return score(model_input, self.spec, self.state)


if __name__.startswith("code_model_"):
    # Loaded by MLflow as the model's code.
    import mlflow.models

    mlflow.models.set_model(DesignerScoringModel())
