"""Builders for the monitoring tests: synthetic data with controllable drift, a real model.

The data: three numeric features (``x1`` normal, ``x2`` normal with another scale, ``x3``
exponential with 2% missing), one categorical feature ``cat`` (a/b/c/d), and a binary label
``y`` that depends on ``x1``, ``x2`` and ``cat``. Drift is injected by shifting ``x1``,
changing the category probabilities, raising the missing rate, or changing the labelling
rule (concept drift: same inputs, different truth).
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lifecycle.base.workspaces import Workspace, local_workspace
from lifecycle.registry.versions import log_and_register

BASE_CAT_P = (0.45, 0.3, 0.15, 0.1)
SHIFTED_CAT_P = (0.15, 0.3, 0.15, 0.4)


def make_data(
    n: int,
    seed: int,
    *,
    x1_shift: float = 0.0,
    cat_p: tuple[float, ...] = BASE_CAT_P,
    x3_missing: float = 0.02,
    concept_drift: bool = False,
) -> pd.DataFrame:
    """``n`` rows of the synthetic data set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0.0, 1.0, n) + x1_shift
    x2 = rng.normal(5.0, 2.0, n)
    x3 = rng.exponential(1.0, n)
    x3[rng.random(n) < x3_missing] = np.nan
    cat = rng.choice(["a", "b", "c", "d"], n, p=list(cat_p))
    cat_effect = pd.Series(cat).map({"a": 0.8, "b": 0.0, "c": -0.5, "d": -1.0}).to_numpy()
    sign = -1.0 if concept_drift else 1.0  # concept drift: x2 and cat now act the other way
    score = 1.5 * (x1 - x1_shift) + sign * (0.5 * (x2 - 5.0) + cat_effect) + rng.normal(0, 0.5, n)
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "cat": cat, "y": (score > 0).astype(int)})


def fit_model(df: pd.DataFrame, C: float = 1.0) -> Any:
    """A Pipeline(impute+scale numeric, one-hot categorical, LogisticRegression) fitted on df."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["x1", "x2", "x3"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["cat"]),
        ]
    )
    return make_pipeline(pre, LogisticRegression(C=C, max_iter=500)).fit(
        df.drop(columns=["y"]), df["y"]
    )


def register(ws: Workspace, name: str, model: Any, sample: pd.DataFrame, path: Path) -> str:
    """Save ``model`` as an MLflow sklearn model (skops) and register it in ``ws``; the version."""
    import mlflow.sklearn
    import skops.io as sio
    from mlflow.models import infer_signature

    features = sample.drop(columns=["y"])
    buf = io.BytesIO()
    sio.dump(model, buf)
    trusted = sio.get_untrusted_types(data=buf.getvalue())
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(features, model.predict(features)),
        pip_requirements=["scikit-learn", "pandas"],
        skops_trusted_types=trusted,
    )
    return log_and_register(ws, path, name, experiment="imports", trust_pickle=True).version


_TEMPLATE: list[Path] = []


def _template_db() -> Path:
    """An empty, migrated SQLite store, made once per test process.

    Creating a store runs MLflow's database migrations (20 s on a loaded 2-core machine);
    copying a migrated empty file gives each test module its own fresh store at no cost.
    """
    if not _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="lifecycle-template-"))
        atexit.register(shutil.rmtree, root, True)
        local_workspace("template", root).client().search_experiments()
        _TEMPLATE.append(root / "template" / "mlflow.db")
    return _TEMPLATE[0]


def write_config(home: Path) -> Path:
    """A lifecycle.yaml whose embedded dev/prod workspaces live under ``home``.

    ``dev`` starts as a fresh copy of a migrated empty store; ``prod`` is not created.
    """
    dev_db = home / ".lifecycle" / "dev" / "mlflow.db"
    dev_db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template_db(), dev_db)
    path = home / "lifecycle.yaml"
    path.write_text(yaml.safe_dump({"home": str(home / ".lifecycle")}), encoding="utf-8")
    return path
