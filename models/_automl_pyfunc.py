"""MLflow pyfunc loader of an Azure ML AutoML ``model.pkl``, copied into each imported
AutoML model (``code/``) and run inside AutoML's own environment (never in the toolkit's:
AutoML's runtime pins pandas 1.5.3 and numpy <= 1.23.5). Imports nothing of the toolkit.

``predict`` answers as AutoML's own scoring file does: labels (or values) by default,
``params={"method": "predict_proba"}`` for one probability column per class, named by the
class as text.
"""

from __future__ import annotations

import sys
from typing import Any


def _restore_for_python_311() -> None:
    """AutoML's runtime raises ``NameError: name 'Scope' is not defined`` on import (and on
    unpickling any AutoML model) on Python 3.11: its ONNX module treats 3.11 as a version
    with ONNX support. Set the bound before anything else of it is imported; no installed
    file is edited."""
    if sys.version_info[:2] != (3, 11):
        return
    from azureml.automl.core.onnx_convert.onnx_convert_constants import OnnxConvertConstants

    OnnxConvertConstants.OnnxIncompatiblePythonVersion = (3, 12)


def _missing_as_nan(data: Any) -> Any:
    """Missing values as NaN in every column, as ``pd.read_csv`` and AutoML's training data
    have them. A JSON ``null`` arrives as ``None``, which AutoML's text featurizer would
    read as the word 'None' (but NaN as missing): a row scores the same online and in batch.
    """
    import numpy as np
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        return data
    out = data.copy()
    for col in out.columns:
        if out[col].dtype == object:
            values = out[col].to_numpy(dtype=object, copy=True)
            values[pd.isna(values)] = np.nan
            out[col] = pd.Series(values, dtype=object, index=out.index)
    return out


class AutoMLModel:
    """The unpickled AutoML pipeline, answering like its scoring file."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Labels or values; class probabilities for ``method: predict_proba``."""
        import pandas as pd

        method = (params or {}).get("method") or "predict"
        data = _missing_as_nan(data)
        if method == "predict":
            return self.model.predict(data)
        if method == "predict_proba":
            if not hasattr(self.model, "predict_proba"):
                raise ValueError("method 'predict_proba': this AutoML model is not a classifier")
            proba = self.model.predict_proba(data)
            return pd.DataFrame(proba, columns=[str(c) for c in self.model.classes_])
        raise ValueError(f"method '{method}' is not one of: predict, predict_proba")


def _load_pyfunc(path: str) -> AutoMLModel:
    _restore_for_python_311()
    import joblib

    return AutoMLModel(joblib.load(path))
