"""Builders for the batch tests: real MLflow models on disk and small CSV files (no mocks)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["f0", "f1", "f2", "n"]


def training_frame(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Three float features and one integer feature, and a binary label."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["f0", "f1", "f2"])
    X["n"] = rng.integers(0, 5, size=rows).astype("int64")
    y = ((X.f0 + X.f1 - 0.3 * X.n) > 0).astype(int)
    return X, y


def save_logreg(path: Path) -> Path:
    """An MLflow sklearn LogisticRegression with a signature (f0..f2 double, n long)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame()
    model = LogisticRegression().fit(X, y)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(X, model.predict(X)),
        pip_requirements=["scikit-learn", "pandas"],
    )
    return path


_CODE_MODEL = """
import time

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class {cls}(PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep({sleep})
        x = model_input["f0"] * 2 + model_input["n"]
        {body}


mlflow.models.set_model({cls}())
"""


def save_code_model(
    path: Path, *, sleep: float = 0.0, designer_style: bool = False, with_outputs: bool = False
) -> Path:
    """A models-from-code pyfunc (no pickle): prediction = 2*f0 + n, optionally slow.

    ``designer_style`` returns a DataFrame with Designer's ``Scored Labels`` and
    ``Scored Probabilities`` columns instead of a Series; ``with_outputs`` puts the outputs
    in the signature too (MLServer's MLflow runtime cannot load a model without them).
    """
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    body = (
        'return pd.DataFrame({"Scored Labels": (x > 0).astype(int), '
        '"Scored Probabilities": 1 / (1 + (-x).map(__import__("math").exp))})'
        if designer_style
        else "return x"
    )
    code = path.parent / f"{path.name}_code.py"
    code.write_text(
        textwrap.dedent(_CODE_MODEL).format(cls="Scorer", sleep=sleep, body=body),
        encoding="utf-8",
    )
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("double", "f0"),
                ColSpec("double", "f1"),
                ColSpec("double", "f2"),
                ColSpec("long", "n"),
            ]
        ),
        outputs=(
            None
            if not with_outputs
            else Schema(
                [ColSpec("long", "Scored Labels"), ColSpec("double", "Scored Probabilities")]
            )
            if designer_style
            else Schema([ColSpec("double")])
        ),
    )
    mlflow.pyfunc.save_model(
        str(path), python_model=str(code), signature=signature, pip_requirements=["pandas"]
    )
    return path


def scoring_frame(rows: int, seed: int = 1) -> pd.DataFrame:
    """Rows to score: an ``id`` column, the features in another order, and an extra column."""
    X, _ = training_frame(rows, seed)
    df = X[["n", "f2", "f0", "f1"]].copy()
    df.insert(0, "id", [f"r{i}" for i in range(rows)])
    df["comment"] = "plain"
    return df
