"""Fixture builders for the notebook origin: a scikit-learn pipeline saved as joblib, pickle,
skops or an MLflow model, with its sample CSV, held-out rows and its own predictions.

Designer and AutoML artifacts are not built here: the tests use real ones, made by
Microsoft's own packages (``tests/fixtures/real/``, rebuilt by ``make fixtures``). The
imitations of their layouts that used to live here are gone with the layouts no real
Designer or AutoML run produces.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

# ----------------------------------------------------------------------------- data


def mixed_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Numeric (float with NaN/inf, int, constant) and string (with missing) features."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype("int64"),
            "income": rng.normal(50_000, 15_000, n).round(2),
            "score": rng.normal(0, 1, n),
            "flat": np.full(n, 3.0),
            "color": rng.choice(["red", "green", "blue"], n).astype(object),
            "plan": rng.choice(["basic", "pro"], n).astype(object),
        }
    )
    df.loc[rng.choice(n, 8, replace=False), "income"] = np.nan
    df.loc[rng.choice(n, 2, replace=False), "score"] = np.inf
    df.loc[rng.choice(n, 6, replace=False), "color"] = None
    return df


def labels_for(df: pd.DataFrame, task: str, seed: int = 0) -> pd.Series:
    """A learnable target for ``df``: binary yes/no, multiclass cat/dog/bird, or a float."""
    rng = np.random.default_rng(seed + 1)
    signal = (
        (df["age"] - 50) / 15
        + np.nan_to_num(df["score"].clip(-3, 3))
        + (df["color"] == "red").astype(float)
    )
    signal = signal + rng.normal(0, 0.5, len(df))
    if task == "binary":
        return pd.Series(np.where(signal > 0, "yes", "no"), name="label", dtype=object)
    if task == "multiclass":
        return pd.Series(
            np.select([signal < -0.7, signal < 0.7], ["bird", "cat"], "dog"),
            name="label",
            dtype=object,
        )
    return pd.Series(signal * 10 + 100, name="label")


# ------------------------------------------------------------------------ notebook


def notebook_pipeline(df: pd.DataFrame, y: pd.Series) -> Any:
    """Pipeline(ColumnTransformer(numeric: impute+scale, categorical: impute+one-hot), LogReg)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = ["age", "income", "score"]
    categorical = ["color", "plan"]
    pre = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))]).fit(df, y)


@dataclass
class NotebookOrigin:
    """A saved notebook model, its sample CSV, held-out rows and the model's predictions."""

    path: Path
    sample_csv: Path
    holdout: pd.DataFrame
    expected: np.ndarray
    model: Any


def notebook_data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Mixed features (inf replaced: a notebook pipeline would choke on it) and binary labels."""
    df = mixed_frame(seed=seed).drop(columns=["flat"])
    df["score"] = df["score"].replace([np.inf], 5.0)
    return df, labels_for(df, "binary", seed)


def build_notebook(root: Path, fmt: str, seed: int = 0) -> NotebookOrigin:
    """Save a fitted ColumnTransformer pipeline as ``fmt``: joblib, pickle, skops or mlflow."""
    df, y = notebook_data(seed)
    train, holdout = df.iloc[:180], df.iloc[180:].reset_index(drop=True)
    model = notebook_pipeline(train, y.iloc[:180])
    root.mkdir(parents=True, exist_ok=True)
    sample_csv = root / "train.csv"
    train.assign(target=y.iloc[:180].values).to_csv(sample_csv, index=False)
    if fmt == "joblib":
        path = root / "model.joblib"
        joblib.dump(model, path)
    elif fmt == "pickle":
        path = root / "model.pkl"
        path.write_bytes(pickle.dumps(model))
    elif fmt == "skops":
        import skops.io

        path = root / "model.skops"
        skops.io.dump(model, str(path))
    elif fmt == "mlflow":
        import mlflow.sklearn
        from mlflow.models import infer_signature

        path = root / "mlflow_model"
        mlflow.sklearn.save_model(
            model,
            str(path),
            signature=infer_signature(train, model.predict(train)),
            input_example=train.head(3),
            pip_requirements=["scikit-learn", "pandas"],
            serialization_format="skops",
            skops_trusted_types=sorted(_skops_untrusted(model)),
        )
    else:
        raise ValueError(fmt)
    return NotebookOrigin(path, sample_csv, holdout, model.predict(holdout), model)


def _skops_untrusted(model: Any) -> list[str]:
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
