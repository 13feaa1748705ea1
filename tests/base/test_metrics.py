"""One meaning per metric: the promotion gates and monitoring compute the same metrics on the
same data, and each name says which average it is (macro, weighted, or the positive class)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from lifecycle.base.metrics import infer_task, task_metrics
from lifecycle.monitor.profile import compute_metrics
from lifecycle.registry import gates


@pytest.fixture
def imbalanced() -> tuple[pd.Series, np.ndarray]:
    # Three classes of very different sizes: macro and weighted averages differ.
    rng = np.random.default_rng(0)
    y = pd.Series(rng.choice(["a", "b", "c"], size=500, p=[0.8, 0.15, 0.05]))
    pred = y.to_numpy().copy()
    flip = rng.random(500) < 0.2
    pred[flip] = rng.choice(["a", "b", "c"], size=int(flip.sum()))
    return y, pred


def test_gates_and_monitoring_report_the_same_f1(imbalanced: tuple[pd.Series, np.ndarray]) -> None:
    y, pred = imbalanced
    macro = skm.f1_score(y, pred, average="macro")
    weighted = skm.f1_score(y, pred, average="weighted")
    assert abs(macro - weighted) > 0.01  # the data tells the two averages apart

    gate = gates.task_metrics(gates.infer_task(y), y, pred)
    monitored = compute_metrics(infer_task(y), y, pd.Series(pred))
    for name in ("accuracy", "f1", "precision", "recall"):
        assert monitored[name] == pytest.approx(gate[name], rel=1e-5)
    assert gate["f1"] == pytest.approx(macro)
    assert gate["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert gate["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))


def test_rows_without_a_label_are_left_out_and_counted() -> None:
    y = pd.Series([1, 0, None, 1])
    got = task_metrics("classification", y, np.array([1, 0, 1, 0]))
    assert got["labelled_rows"] == 3
    assert got["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("labels", "task"),
    [
        (["yes", "no"], "classification"),
        ([0, 1, 1, 0], "classification"),
        ([0.0, 1.0, 2.0], "classification"),
        (list(np.linspace(0, 1, 50)), "regression"),
        (list(range(200)), "regression"),
    ],
)
def test_task_is_inferred_from_the_labels(labels: list[object], task: str) -> None:
    assert infer_task(labels) == task


def test_regression_metrics_match_scikit_learn() -> None:
    y = np.array([1.0, 2.0, 3.5, 4.0])
    p = np.array([1.1, 1.9, 3.0, 4.4])
    got = task_metrics("regression", y, p)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(skm.r2_score(y, p))


@pytest.mark.parametrize(
    ("labels", "positive"),
    [
        ([0, 1], 1),
        (["no", "yes"], "yes"),
        ([False, True], True),
        (["benign", "malignant"], "malignant"),
    ],
)
def test_binary_f1_precision_recall_are_the_positive_classes(
    labels: list[object], positive: object
) -> None:
    """Issue #21 item 4: for two classes the plain names are the positive class's (the larger
    label), never a macro average under the same name; the averages carry their own names."""
    rng = np.random.default_rng(3)
    y = pd.Series(rng.choice(np.array(labels, dtype=object), size=400, p=[0.85, 0.15]))
    pred = y.to_numpy().copy()
    flip = rng.random(400) < 0.15
    pred[flip] = rng.choice(np.array(labels, dtype=object), size=int(flip.sum()))
    y, p = y.astype(type(labels[0])), pd.Series(pred).astype(type(labels[0]))
    got = task_metrics("classification", y, p)
    assert got["f1"] == pytest.approx(skm.f1_score(y, p, pos_label=positive))
    assert got["precision"] == pytest.approx(skm.precision_score(y, p, pos_label=positive))
    assert got["recall"] == pytest.approx(skm.recall_score(y, p, pos_label=positive))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert got["f1_weighted"] == pytest.approx(skm.f1_score(y, p, average="weighted"))
    assert got["f1"] != pytest.approx(got["f1_macro"])  # the data tells them apart


def test_multiclass_names_the_average_and_keeps_the_old_names_as_aliases(
    imbalanced: tuple[pd.Series, np.ndarray],
) -> None:
    y, pred = imbalanced
    got = task_metrics("classification", y, pred)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert got["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert (got["f1"], got["precision"], got["recall"]) == (
        got["f1_macro"],
        got["precision_macro"],
        got["recall_macro"],
    )
