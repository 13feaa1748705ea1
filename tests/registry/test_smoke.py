"""The promotion's smoke test (issue #20 item 3): a fresh process, started before the model is
known, loads it and predicts its input example; a skops scikit-learn model without MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifecycle.registry.smoke import SmokeTest, smoke_test
from tests.support.batch_models import save_code_model
from tests.support.mlflow_models import save_sklearn_model


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    X["n"] = rng.integers(0, 4, size=60)
    return X, (X["a"] + X["n"] > 1).astype(int).to_numpy()


def test_skops_model_is_loaded_and_predicted_without_mlflow(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _frame()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = save_sklearn_model(pipeline, tmp_path / "pipe", X)
    result = smoke_test(model)
    assert result.passed is True, result.detail
    assert result.value == "3 rows predicted"
    assert result.detail == "input example predicted in a fresh process (skops, without MLflow)"


def test_a_broken_skops_file_fails_the_gate_with_the_loaders_reason(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    model = save_sklearn_model(LogisticRegression().fit(X, y), tmp_path / "lr", X)
    skops_file = model / "model.skops"
    skops_file.write_bytes(skops_file.read_bytes()[:200])  # truncated in transit
    result = smoke_test(model)
    assert result.passed is False
    assert result.detail and "zip" in result.detail.lower(), result.detail


def test_example_the_model_cannot_predict_fails_the_gate(tmp_path: Path) -> None:
    """The input example no longer fits the estimator (one feature fewer): skops loads it,
    the prediction raises, the gate fails naming scikit-learn's error."""
    from sklearn.linear_model import LogisticRegression

    X, y = _frame()
    model = save_sklearn_model(LogisticRegression().fit(X, y), tmp_path / "lr", X)
    example = model / "input_example.json"
    example.write_text(
        example.read_text().replace(
            '"columns": ["a", "b", "c", "n"]', '"columns": ["a", "b", "c", "m"]'
        )
    )
    result = smoke_test(model)
    assert result.passed is False
    assert "KeyError" in (result.detail or "") or "not in index" in (result.detail or "")


def test_other_models_go_through_mlflow_in_the_fresh_process(tmp_path: Path) -> None:
    model = save_code_model(tmp_path / "code")  # a models-from-code pyfunc, no example
    result = smoke_test(model)
    assert result.passed is True, result.detail
    assert result.value == "loaded" and "skops" not in (result.detail or "")


def test_the_process_starts_before_the_model_is_known_and_is_stopped_when_unused() -> None:
    with SmokeTest() as waiting:
        proc = waiting._proc
        assert proc is not None and proc.poll() is None  # importing, or waiting for a model
        skipped = waiting.skipped("skipped: an earlier gate failed")
    assert skipped.passed is None and skipped.detail == "skipped: an earlier gate failed"
    assert proc.poll() is not None
    with pytest.raises(RuntimeError, match="already run"):
        waiting.run(".")
