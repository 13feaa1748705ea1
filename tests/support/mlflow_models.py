"""Small builders shared by tests (no mocks: real models, real stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def save_sklearn_model(model: Any, path: Path, sample: pd.DataFrame) -> Path:
    """Save a fitted estimator as an MLflow sklearn model (skops) with a signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(sample, model.predict(sample))
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=signature,
        input_example=sample.head(3),
        pip_requirements=["scikit-learn", "pandas"],
    )
    return path
