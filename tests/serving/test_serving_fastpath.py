"""The fast path returns exactly what ``pyfunc.predict`` returns, or stays off.

In-process on purpose: this compares the compiled predictor with MLflow's pyfunc on many
random inputs (values, dtype and shape must be identical), and checks which models may take
the fast path at all. The HTTP behaviour is covered by test_serving_differential.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from lifecycle.base.lean import same_predictions
from serving.fastpath import compile_fast_path
from serving.protocol import fast_rows, render_predictions

COLS = [f"x{i}" for i in range(5)]
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(COLS))) * [1, 10, 100, 0.1, 1], columns=COLS)


def _save(tmp: Path, name: str, model: Any, X: pd.DataFrame, **kw: Any) -> Any:
    path = tmp / name
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(X, model.predict(X)),
        input_example=X.head(2),
        pip_requirements=["scikit-learn"],
        **kw,
    )
    return mlflow.pyfunc.load_model(str(path), suppress_warnings=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    tmp = tmp_path_factory.mktemp("fast")
    X = _frame(400, 1)
    y_bin = (X.x0 + X.x1 / 10 > 0).astype(int)
    y_multi = np.where(X.x0 > 0.5, "high", np.where(X.x0 < -0.5, "low", "mid"))
    y_reg = X.x0 * 3 + X.x2 / 100 + 0.1
    trusted = ["sklearn.tree._tree.Tree"]
    return {
        "logreg": _save(tmp, "logreg", LogisticRegression().fit(X, y_bin), X),
        "scaled-multiclass": _save(
            tmp,
            "multi",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y_multi),
            X,
        ),
        "linear": _save(tmp, "linear", LinearRegression().fit(X, y_reg), X),
        "ridge-scaled": _save(
            tmp, "ridge", make_pipeline(StandardScaler(), Ridge()).fit(X, y_reg), X
        ),
        "forest": _save(
            tmp,
            "forest",
            RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(X, y_bin),
            X,
            skops_trusted_types=trusted,
        ),
        "tree-regressor": _save(
            tmp,
            "tree",
            DecisionTreeRegressor(max_depth=5, random_state=0).fit(X, y_reg),
            X,
            skops_trusted_types=trusted,
        ),
        "proba": _save(
            tmp,
            "proba",
            LogisticRegression().fit(X, y_bin),
            X,
            pyfunc_predict_fn="predict_proba",
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["logreg", "scaled-multiclass", "linear", "ridge-scaled", "forest", "tree-regressor", "proba"],
)
def test_fast_path_equals_pyfunc_on_random_inputs(models: dict[str, Any], name: str) -> None:
    model = models[name]
    fast = compile_fast_path(model)
    assert fast is not None, f"{name} should take the fast path"
    rng = np.random.default_rng(42)
    for trial in range(60):
        n = int(rng.integers(1, 40))
        frame = _frame(n, 1000 + trial)
        if trial % 3 == 0:  # integers and extreme magnitudes too
            frame = (frame * 10 ** int(rng.integers(0, 6))).round()
        expected = model.predict(frame)
        got = fast(frame.to_numpy(dtype=np.float64))
        assert same_predictions(expected, got), (name, trial)
        if fast.batchable and n > 1:
            # A stacked micro-batch, split again, gives every request its own answer.
            halves = [fast(frame.to_numpy()[: n // 2]), fast(frame.to_numpy()[n // 2 :])]
            assert same_predictions(np.concatenate(halves), np.asarray(expected))


def test_compiled_linear_models_and_estimator_calls(models: dict[str, Any]) -> None:
    methods = {name: compile_fast_path(m).method for name, m in models.items()}  # type: ignore[union-attr]
    assert methods["logreg"] == "predict (compiled)"
    assert methods["scaled-multiclass"] == "predict (compiled)"
    assert methods["forest"] == "predict"
    assert methods["proba"] == "predict_proba"


def test_json_body_through_fast_path_renders_mlflow_bytes(models: dict[str, Any]) -> None:
    from io import StringIO

    from mlflow.pyfunc.scoring_server import predictions_to_json

    model = models["scaled-multiclass"]
    fast = compile_fast_path(model)
    assert fast is not None
    frame = _frame(6, 7)
    shuffled = frame[COLS[::-1]]
    body = json.dumps(
        {"dataframe_split": {"columns": list(shuffled.columns), "data": shuffled.values.tolist()}}
    ).encode()
    found = fast_rows(json.loads(body), body, fast.columns)
    assert found is not None and found[1] == "mlflow"
    out = StringIO()
    predictions_to_json(model.predict(frame), out)
    assert render_predictions(fast(found[0]), "mlflow") == out.getvalue().encode()


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": COLS, "data": [[1, 2, 3, 4, True]]}},
        {"dataframe_split": {"columns": COLS, "data": [[1, 2, 3, 4, None]]}},
        {"dataframe_split": {"columns": COLS, "data": [[1, 2, 3, 4, "5"]]}},
        {"dataframe_split": {"columns": COLS[:4], "data": [[1, 2, 3, 4]]}},
        {"dataframe_split": {"columns": COLS, "data": []}},
        {"dataframe_split": {"data": [[1, 2, 3, 4, 5]]}},
        {"dataframe_split": {"columns": COLS, "data": [[1, 2, 3, 4, 5]]}, "params": {}},
        {"dataframe_records": [{"x0": 1}]},
        {"instances": [[1, 2, 3, 4, 5]]},
        # pandas reads list labels as a MultiIndex: MLflow's server answers another row count.
        {"dataframe_split": {"columns": COLS, "data": [[1, 2, 3, 4, 5]] * 2, "index": [[0], [1]]}},
        {"dataframe_split": {"columns": COLS, "data": [[1, 2, 3, 4, 5]], "index": [True]}},
    ],
)
def test_ambiguous_bodies_leave_the_fast_path(payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    assert fast_rows(payload, body, tuple(COLS)) is None


def test_models_that_need_names_or_other_types_stay_on_pyfunc(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = _frame(100, 3)
    y = (X.x0 > 0).astype(int)
    by_name = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), ["x0", "x1"])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(X, y)
    assert compile_fast_path(_save(tmp_path, "ct", by_name, X)) is None
    X_int = X.assign(x4=(X.x4 * 10).round().astype("int64"))
    ints = LogisticRegression().fit(X_int, y)
    assert compile_fast_path(_save(tmp_path, "ints", ints, X_int)) is None
