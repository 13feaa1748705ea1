"""Fixtures shared by the registry tests: saved MLflow model directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.dummy import DummyClassifier

from tests.support.mlflow_models import save_sklearn_model


@pytest.fixture(scope="session")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, fitted_logreg: Any, breast_cancer: Any
) -> Path:
    """The fitted logistic-regression pipeline saved as an MLflow model (3-row example)."""
    X, _ = breast_cancer
    return save_sklearn_model(fitted_logreg, tmp_path_factory.mktemp("m") / "model", X.head(3))


@pytest.fixture(scope="session")
def dummy_dir(tmp_path_factory: pytest.TempPathFactory, breast_cancer: Any) -> Path:
    """A constant classifier saved as an MLflow model (different content, same signature)."""
    X, y = breast_cancer
    dummy = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    return save_sklearn_model(dummy, tmp_path_factory.mktemp("m") / "dummy", X.head(3))
