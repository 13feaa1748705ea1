"""Monitoring statistics that do not cry wolf (issue #21): exact baselines, small-sample
honesty (a simulation from the baseline's own distribution) and an oracle that recomputes
every statistic independently (numpy, scipy, scikit-learn) from the raw samples."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lifecycle.monitor.drift import Thresholds, compare, compare_column
from lifecycle.monitor.profile import EXACT_SAMPLE_MAX, sketch_column

RNG_SEED = 2112


@pytest.mark.parametrize(
    ("label", "make"),
    [
        ("N(1e6, 10)", lambda rng, n: rng.normal(1e6, 10, n)),
        ("N(1e6, 1)", lambda rng, n: rng.normal(1e6, 1, n)),
        ("epoch seconds in one day", lambda rng, n: 1.7e9 + rng.uniform(0, 86_400, n)),
        ("N(0, 1e-9)", lambda rng, n: rng.normal(0, 1e-9, n)),
    ],
)
@pytest.mark.parametrize("rows", [500, EXACT_SAMPLE_MAX, 20_000])
def test_a_sample_compared_with_itself_shows_no_change_at_any_scale(
    label: str, make: Any, rows: int
) -> None:
    values = pd.Series(make(np.random.default_rng(RNG_SEED), rows))
    sketch = sketch_column(values)
    stat = compare_column(sketch, values)
    assert stat["psi"] == 0.0, label
    if rows <= EXACT_SAMPLE_MAX:  # the whole sample is stored: KS is exact
        assert stat["ks_statistic"] == 0.0 and stat["ks_pvalue"] == 1.0, label
    else:  # 1,001 exact quantiles: the interpolated CDF is within 1/1000 of the sample's
        assert stat["ks_statistic"] < 0.0015, (label, stat["ks_statistic"])
    baseline = _profile(pd.DataFrame({"x": values}), pd.Series(np.zeros(rows)))
    report = compare(baseline, pd.DataFrame({"x": values}), pd.Series(np.zeros(rows)))
    assert not report.drift, (label, report.reasons)


def _population(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "x1": rng.normal(0, 1, n),
            "x2": rng.normal(0, 1, n) + shift,
            "x3": rng.lognormal(0, 1, n),
            "x4": rng.normal(50, 10, n),
            "count": rng.poisson(2.0, n).astype("float64"),
            "city": rng.choice(
                ["rome", "oslo", "lima", "paris", "kyiv"], n, p=[0.4, 0.3, 0.2, 0.07, 0.03]
            ),
        }
    )
    frame.loc[rng.random(n) < 0.05, "x4"] = np.nan  # 5% missing, as in the baseline
    return frame


def _predict(frame: pd.DataFrame) -> pd.Series:
    return pd.Series((frame["x1"] + 0.5 * frame["x2"] > 0).astype("int64"), name="prediction")


def _profile(frame: pd.DataFrame, predictions: pd.Series) -> dict[str, Any]:
    return {
        "feature_order": list(frame.columns),
        "features": {c: sketch_column(frame[c]) for c in frame.columns},
        "prediction": sketch_column(predictions),
        "metrics": {},
        "task": None,
    }


def _flagged(
    baseline: dict[str, Any], rng: np.random.Generator, rows: int, runs: int, shift: float = 0.0
) -> float:
    hits = 0
    for _ in range(runs):
        new = _population(rng, rows, shift)
        hits += compare(baseline, new, _predict(new), thresholds=Thresholds()).drift
    return hits / runs


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    frame = _population(np.random.default_rng(1), 2000)
    return _profile(frame, _predict(frame))


@pytest.mark.parametrize("rows", [50, 200, 1000])
def test_data_from_the_baselines_own_distribution_is_rarely_flagged(
    baseline: dict[str, Any], rows: int
) -> None:
    rate = _flagged(baseline, np.random.default_rng(rows), rows, runs=200)
    assert rate <= 0.05, f"{rate:.1%} of no-drift runs flagged at {rows} rows"


def test_a_half_sd_shift_of_one_feature_is_flagged_at_1000_rows(baseline: dict[str, Any]) -> None:
    rate = _flagged(baseline, np.random.default_rng(7), 1000, runs=100, shift=0.5)
    assert rate >= 0.95, f"only {rate:.0%} of shifted runs flagged"


def test_too_few_rows_are_insufficient_data_not_a_verdict(baseline: dict[str, Any]) -> None:
    new = _population(np.random.default_rng(3), 12, shift=3.0)  # shifted, but 12 rows
    report = compare(baseline, new, _predict(new))
    assert report.insufficient and not report.drift
    assert {f["status"] for f in report.features} == {"insufficient"}


def test_lifecycle_monitor_json_agrees_with_an_independent_recomputation(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oracle: PSI (deciles of the raw baseline), KS (``scipy.stats.ks_2samp``),
    chi-square (``scipy.stats.chi2_contingency`` on raw counts), missing rates and the
    metrics (scikit-learn: positive class, macro, weighted) recomputed from the raw samples agree with what
    ``lifecycle monitor --json`` reports for a real registered model."""
    import json

    from click.testing import CliRunner
    from sklearn import metrics as skm

    from lifecycle.cli import cli
    from tests.support.monitor_data import SHIFTED_CAT_P, make_data

    reg = _registered(tmp_path, monkeypatch, "oracle", rows=1500, seed=40)
    config, model, train, version = reg.config, reg.model, reg.train, reg.version
    new = make_data(800, seed=41, x1_shift=0.4, cat_p=SHIFTED_CAT_P, x3_missing=0.2)
    new_csv = tmp_path / "new.csv"
    new.to_csv(new_csv, index=False)

    out = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "monitor",
            f"models:/oracle/{version}",
            "-w",
            "dev",
            "--input",
            str(new_csv),
            "--labels",
            "y",
            "--json",
            "--policy",
            str(_no_actions(tmp_path)),
        ],
    )
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    feats = {f["name"]: f for f in got["features"]}
    for col in ("x1", "x2", "x3"):
        base = train[col].dropna().to_numpy()
        cur = pd.to_numeric(new[col]).dropna().to_numpy()
        edges = np.unique(np.quantile(base, np.linspace(0, 1, 11)[1:-1]))
        b = np.bincount(np.searchsorted(edges, base, side="right"), minlength=len(edges) + 1)
        c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
        b, c = np.clip(b / len(base), 1e-4, None), np.clip(c / len(cur), 1e-4, None)
        assert feats[col]["psi"] == pytest.approx(float(np.sum((c - b) * np.log(c / b))), abs=1e-12)
        ks = stats.ks_2samp(cur, base)
        assert feats[col]["ks_statistic"] == pytest.approx(ks.statistic, abs=1e-12)
        assert feats[col]["ks_pvalue"] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
        assert feats[col]["missing_rate"] == pytest.approx(new[col].isna().mean(), abs=1e-12)
    cats = sorted(set(train["cat"]))
    table = np.array(
        [
            [int((train["cat"] == k).sum()) for k in cats],
            [int((new["cat"] == k).sum()) for k in cats],
        ]
    )
    assert feats["cat"]["chi2_pvalue"] == pytest.approx(stats.chi2_contingency(table)[1], rel=1e-6)
    predictions = model.predict(new.drop(columns="y"))
    expected = {
        "accuracy": skm.accuracy_score(new["y"], predictions),
        "f1": skm.f1_score(new["y"], predictions),  # two classes: the positive class, 1
        "precision": skm.precision_score(new["y"], predictions),
        "recall": skm.recall_score(new["y"], predictions),
        "f1_macro": skm.f1_score(new["y"], predictions, average="macro"),
        "precision_macro": skm.precision_score(new["y"], predictions, average="macro"),
        "recall_macro": skm.recall_score(new["y"], predictions, average="macro"),
        "f1_weighted": skm.f1_score(new["y"], predictions, average="weighted"),
    }
    for key, value in expected.items():
        assert got["metrics"][key] == pytest.approx(value, abs=5e-7), key  # 6 digits shown
    assert got["drift"] and feats["x1"]["drift"] and feats["x3"]["drift"]
    assert not feats["x2"]["drift"], feats["x2"]


@dataclass
class _Registered:
    config: Path
    ws: Any
    model: Any
    train: pd.DataFrame
    version: str


def _registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, rows: int, seed: int
) -> _Registered:
    """A real SQLite workspace (cwd ``tmp_path``) holding ``name`` v1, a fitted pipeline on
    ``rows`` synthetic rows, with its baseline (labels ``y``) attached."""
    from lifecycle.base.workspaces import load_config
    from lifecycle.monitor import attach_baseline
    from tests.support.monitor_data import fit_model, make_data, register, write_config

    config = write_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    ws = load_config(config).get("dev")
    train = make_data(rows, seed=seed)
    model = fit_model(train)
    version = register(ws, name, model, train, tmp_path / "m")
    attach_baseline(ws, name, version, train, labels="y")
    return _Registered(config, ws, model, train, version)


def _no_actions(tmp_path: Any) -> Any:
    path = tmp_path / "no-actions.yaml"
    path.write_text("actions: []\n", encoding="utf-8")
    return path


def test_data_quality_type_errors_and_out_of_range_values_are_their_own_findings(
    baseline: dict[str, Any],
) -> None:
    """Issue #21 item 5: beside drift, a numeric column's non-numbers (type errors) and values
    outside the baseline's min..max are counted, each with its policy threshold."""
    new = _population(np.random.default_rng(11), 400)
    clean = compare(baseline, new, _predict(new))
    assert not clean.drift, clean.reasons
    dirty = new.astype({"x1": "object"})
    dirty.loc[:9, "x1"] = "n/a"  # 10 of 400 present but not numbers
    dirty.loc[10:60, "x3"] = 1e6  # far beyond the baseline's maximum
    report = compare(baseline, dirty, _predict(new))
    feats = {f["name"]: f for f in report.features}
    assert feats["x1"]["type_error_rate"] == pytest.approx(10 / 400)
    assert feats["x1"]["missing_rate"] == 0.0  # present, so not missing
    assert any("type errors 0.025 > 0.0" in r for r in feats["x1"]["reasons"])
    assert 51 / 400 <= feats["x3"]["out_of_range_rate"] < 0.14  # 51 set, chance adds one or two
    assert any(re.match(r"out of range 0\.1\d\d > 0\.05", r) for r in feats["x3"]["reasons"])
    lenient = Thresholds(type_error_rate=0.05, out_of_range=0.2)
    relaxed = {
        f["name"]: f for f in compare(baseline, dirty, _predict(new), thresholds=lenient).features
    }
    assert not any("type errors" in r for r in relaxed["x1"]["reasons"])
    assert not any("out of range" in r for r in relaxed["x3"]["reasons"])


def test_monitor_scores_the_rows_without_type_errors_and_reports_the_rest(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.monitor.monitor import monitor
    from tests.support.monitor_data import make_data

    reg = _registered(tmp_path, monkeypatch, "quality", rows=1000, seed=50)
    ws, version = reg.ws, reg.version
    new = make_data(300, seed=51).astype({"x2": "object"})
    new.loc[:4, "x2"] = "unknown"
    csv = tmp_path / "new.csv"
    new.to_csv(csv, index=False)
    result = monitor(
        ws, f"models:/quality/{version}", [csv], labels="y", policy=_no_actions(tmp_path)
    )
    x2 = next(f for f in result.features if f["name"] == "x2")
    assert x2["type_error_rate"] == pytest.approx(5 / 300) and x2["drift"]
    assert result.metrics["labelled_rows"] == 295  # the five rows the model could not score
    assert result.rows == 300


def test_prediction_drift_is_also_measured_on_the_classifiers_probabilities(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #21 item 3: the baseline keeps the positive class's probability, and monitoring
    compares it like a feature (KS is ks_2samp of predict_proba on both samples)."""
    from lifecycle.monitor import load_baseline
    from lifecycle.monitor.monitor import monitor
    from tests.support.monitor_data import make_data

    reg = _registered(tmp_path, monkeypatch, "scores", rows=1200, seed=60)
    ws, model, train, version = reg.ws, reg.model, reg.train, reg.version
    assert load_baseline(ws, "scores", version)["score"]["count"] == 1200
    new = make_data(600, seed=61, x1_shift=0.5)
    csv = tmp_path / "new.csv"
    new.to_csv(csv, index=False)
    result = monitor(ws, f"models:/scores/{version}", [csv], policy=_no_actions(tmp_path))
    assert result.score is not None
    expected = stats.ks_2samp(
        model.predict_proba(new.drop(columns="y"))[:, 1],
        model.predict_proba(train.drop(columns="y"))[:, 1],
    )
    assert result.score["ks_statistic"] == pytest.approx(expected.statistic, abs=1e-12)
    assert result.score["drift"] and any(r.startswith("score ") for r in result.reasons)
    assert result.to_dict()["score"]["name"] == "score"


def test_monitor_command_exits_4_when_no_column_has_enough_rows(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from lifecycle.cli import cli
    from tests.support.monitor_data import make_data

    reg = _registered(tmp_path, monkeypatch, "few", rows=500, seed=70)
    config, version = reg.config, reg.version
    csv = tmp_path / "few.csv"
    make_data(12, seed=71, x1_shift=3.0).to_csv(csv, index=False)
    out = CliRunner().invoke(
        cli, ["--config", str(config), "monitor", f"models:/few/{version}", "-w", "dev",
              "--input", str(csv)],
    )  # fmt: skip
    assert out.exit_code == 4, out.output
    assert "insufficient data (12 rows" in out.output
    assert "Insufficient data to monitor few v1 in 'dev': 12 rows" in out.output
