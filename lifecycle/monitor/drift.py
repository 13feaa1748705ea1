"""Drift statistics: new data against a baseline profile (see :mod:`lifecycle.monitor.profile`).

Per numeric feature: the population stability index (PSI) over the baseline's decile bins and
a Kolmogorov-Smirnov test; per categorical feature: PSI over the baseline's categories and a
chi-square test of homogeneity; per feature the missing-rate change; the same for the model's
predictions; and, with labels, the model's metrics on the new data and their change.

The baseline is a sketch, not the raw sample, so the KS statistic is the exact supremum
distance between the new data's empirical CDF and the CDF the sketch describes (piecewise
linear through 1,001 quantiles, or a step function for few-valued columns); its p-value uses
the two-sample Kolmogorov distribution with the effective size ``n*m/(n+m)``, as
``scipy.stats.ks_2samp`` does in asymptotic mode.

Large samples make every p-value tiny, so a test only flags drift together with an effect
size (KS distance, or total variation distance for categories) of at least ``min_effect``.

Small samples make every statistic noisy, so no verdict is a fixed threshold alone
(:func:`feature_verdict`): a column with fewer than ``min_rows`` values is not judged
("insufficient data"); every p-value is compared with its threshold divided by the number of
columns judged (Bonferroni: the false-alarm rate holds for the whole run, not per feature);
a PSI counts only above the level that samples of this size drawn from the baseline itself
exceed with that same probability (a parametric bootstrap from the baseline's bins, both
samples redrawn); a missing-rate rule only when a binomial test says the rate really rose.
When the baseline holds the whole sample (up to 2,000 values) KS is ``scipy.stats.ks_2samp``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lifecycle.base.metrics import HIGHER_IS_BETTER
from lifecycle.monitor.profile import (
    OTHER,
    category_values,
    compute_metrics,
    numeric_values,
)

_EPS = 1e-4


@dataclass
class Thresholds:
    """When a feature, the predictions or a metric count as drifted."""

    psi: float = 0.25
    ks_pvalue: float = 0.01
    chi2_pvalue: float = 0.01
    min_effect: float = 0.1
    missing_rate: float = 0.1
    missing_rate_increase: float = 0.05
    prediction_psi: float = 0.25
    metric_drop: dict[str, float] = field(
        default_factory=lambda: {"accuracy": 0.05, "f1": 0.05, "r2": 0.1}
    )
    min_drifted_features: int = 1
    #: Data quality: share of a numeric column's non-missing values that are not numbers.
    type_error_rate: float = 0.0
    #: Data quality: share of values outside the baseline's [min, max] (binomial-tested).
    out_of_range: float = 0.05
    #: A column with fewer values than this in the new data is not judged (insufficient data).
    min_rows: int = 30
    #: Run-wide false-alarm rate of the PSI and missing-rate rules (Bonferroni over columns).
    psi_pvalue: float = 0.01
    missing_pvalue: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


def psi(baseline: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (fractions)."""
    b = np.clip(np.asarray(baseline, dtype="float64"), _EPS, None)
    c = np.clip(np.asarray(current, dtype="float64"), _EPS, None)
    return float(np.sum((c - b) * np.log(c / b)))


def _bins_numeric(sketch: dict[str, Any], values: np.ndarray) -> tuple[list[str], list[float]]:
    edges = np.asarray(sketch.get("bin_edges") or [], dtype="float64")
    if not len(values):
        return _bin_labels(edges), [0.0] * (len(edges) + 1)
    idx = np.searchsorted(edges, values, side="right")
    return _bin_labels(edges), list(np.bincount(idx, minlength=len(edges) + 1) / len(values))


def _bin_labels(edges: np.ndarray) -> list[str]:
    bounds = ["-inf", *[f"{e:.4g}" for e in edges], "inf"]
    return [f"[{bounds[i]}, {bounds[i + 1]})" for i in range(len(bounds) - 1)]


_BOOTSTRAP_DRAWS = 20_000


@functools.lru_cache(maxsize=4096)
def psi_chance_level(base: tuple[float, ...], n_base: int, n_new: int, p: float) -> float:
    """The PSI that a sample of ``n_new`` rows from the baseline's own distribution exceeds
    with probability ``p``, against a baseline of ``n_base`` rows (both redrawn from the
    baseline's bin fractions ``base``; a fixed seed, so a verdict is reproducible)."""
    probs = np.clip(np.asarray(base, dtype="float64"), 0.0, None)
    probs = probs / probs.sum()
    rng = np.random.default_rng(20261203)
    b = rng.multinomial(max(1, n_base), probs, size=_BOOTSTRAP_DRAWS) / max(1, n_base)
    c = rng.multinomial(max(1, n_new), probs, size=_BOOTSTRAP_DRAWS) / max(1, n_new)
    b, c = np.clip(b, _EPS, None), np.clip(c, _EPS, None)
    draws = np.sum((c - b) * np.log(c / b), axis=1)
    return float(np.quantile(draws, 1.0 - min(max(p, 1.0 / _BOOTSTRAP_DRAWS), 1.0)))


def _ks_statistic(sketch: dict[str, Any], values: np.ndarray) -> float:
    """sup |F_new - F_base| with F_base the CDF the sketch describes."""
    if sketch.get("sorted_values") is not None:
        return float(stats.ks_2samp(values, np.asarray(sketch["sorted_values"])).statistic)
    x = np.sort(values)
    n = len(x)
    if sketch.get("discrete"):
        knots = np.asarray(sketch["values"], dtype="float64")
        cum = np.cumsum(np.asarray(sketch["frequencies"], dtype="float64"))
        cum = cum / cum[-1]
        # Both CDFs are step functions: compare them at every jump of either.
        points = np.union1d(knots, np.unique(x))
        f_new = np.searchsorted(x, points, side="right") / n
        f_base = np.concatenate([[0.0], cum])[np.searchsorted(knots, points, side="right")]
        return float(np.max(np.abs(f_new - f_base)))
    q = np.asarray(sketch["quantiles"], dtype="float64")
    p = np.linspace(0, 1, len(q))
    # Tied quantiles are a jump of the baseline CDF: keep its left and right value per knot.
    knots, first = np.unique(q, return_index=True)
    last = np.append(first[1:] - 1, len(q) - 1)
    left, right = p[first], p[last]
    left[0] = 0.0
    top = len(knots) - 1

    def base_cdf(t: np.ndarray, at_left: bool) -> np.ndarray:
        """The sketch's CDF at ``t`` (its left limit when ``at_left``), linear between knots."""
        k = np.searchsorted(knots, t, side="right") - 1  # last knot <= t
        out = np.where(k >= top, 1.0, 0.0)
        inside = (k >= 0) & (k < top)
        ki = k[inside]
        frac = (t[inside] - knots[ki]) / (knots[ki + 1] - knots[ki])
        out[inside] = right[ki] + (left[ki + 1] - right[ki]) * frac
        kc = k.clip(0)
        exact = (k >= 0) & (knots[kc] == t)
        out[exact] = (left if at_left else right)[kc[exact]]
        return out

    d = 0.0
    # Between consecutive points of x and the knots both CDFs are monotone and F_new is
    # constant, so the supremum is reached at (the left or right side of) one of them.
    for points in (x, knots):
        f_new = np.searchsorted(x, points, side="right") / n
        f_new_left = np.searchsorted(x, points, side="left") / n
        d = max(
            d,
            float(np.max(np.abs(f_new - base_cdf(points, False)))),
            float(np.max(np.abs(f_new_left - base_cdf(points, True)))),
        )
    return d


def ks_pvalue(statistic: float, n_base: int, n_new: int) -> float:
    """Two-sample KS p-value (asymptotic, effective size ``n*m/(n+m)``)."""
    if n_base <= 0 or n_new <= 0:
        return 1.0
    en = n_base * n_new / (n_base + n_new)
    if en > 10_000:
        # The limiting distribution: same answer at this size, without kstwo's O(n) cost.
        return float(stats.kstwobign.sf(statistic * math.sqrt(en)))
    return float(stats.kstwo.sf(statistic, max(1, round(en))))


def compare_column(sketch: dict[str, Any], series: pd.Series) -> dict[str, Any]:
    """Drift statistics of one column of new data against its baseline sketch.

    Returns:
        ``kind``, ``psi``, ``ks_statistic``/``ks_pvalue`` (numeric), ``chi2_pvalue`` and
        ``tvd`` (categorical), ``missing_rate``, ``baseline_missing_rate``, ``count``, and
        ``bins`` (labels with baseline and current fractions, for plots).
    """
    total = len(series)
    out: dict[str, Any] = {
        "total": total,
        "baseline_count": int(sketch.get("count") or 0),
        "kind": sketch["kind"],
        "baseline_missing_rate": sketch.get("missing_rate", 0.0),
        "psi": None,
        "ks_statistic": None,
        "ks_pvalue": None,
        "chi2_pvalue": None,
        "tvd": None,
    }
    if sketch["kind"] == "numeric":
        values = numeric_values(series)
        out["count"] = len(values)
        missing = int(series.isna().sum())
        out["missing_rate"] = missing / total if total else 0.0
        # Present but not a (finite) number: a type error, not a missing value.
        out["type_error_rate"] = (total - missing - len(values)) / total if total else 0.0
        if not len(values) or not sketch.get("count"):
            return out
        out["mean"] = float(values.mean())
        if sketch.get("min") is not None and sketch.get("max") is not None:
            outside = (values < float(sketch["min"])) | (values > float(sketch["max"]))
            out["out_of_range_rate"] = float(outside.mean())
        if sketch.get("discrete"):
            keys = [float(v) for v in sketch["values"]]
            base = [*sketch["frequencies"], 0.0]
            labels = [f"{v:g}" for v in keys] + [OTHER]
            known = np.asarray(keys, dtype="float64")  # sorted (np.unique in the profile)
            idx = np.searchsorted(known, values).clip(0, len(keys) - 1)
            idx = np.where(known[idx] == values, idx, len(keys))  # unseen values: other
            cur = list(np.bincount(idx, minlength=len(keys) + 1) / len(values))
        else:
            labels, cur = _bins_numeric(sketch, values)
            base = list(sketch["bin_fractions"])
        out["psi"] = psi(np.array(base), np.array(cur))
        if sketch.get("sorted_values") is not None:  # the whole baseline sample: exact test
            test = stats.ks_2samp(values, np.asarray(sketch["sorted_values"]))
            out["ks_statistic"] = float(test.statistic)
            out["ks_pvalue"] = float(test.pvalue)
        else:
            d = _ks_statistic(sketch, values)
            out["ks_statistic"] = d
            out["ks_pvalue"] = ks_pvalue(d, int(sketch["count"]), len(values))
        out["bins"] = {"labels": labels, "baseline": base, "current": [float(c) for c in cur]}
        return out
    cats = category_values(series)
    out["count"] = len(cats)
    out["missing_rate"] = (total - len(cats)) / total if total else 0.0
    if not len(cats) or not sketch.get("count"):
        return out
    keys = list(sketch["categories"])
    base = [*sketch["frequencies"], sketch.get("other_fraction", 0.0)]
    counts = cats.value_counts()
    cur_counts = [int(counts.get(k, 0)) for k in keys]
    cur_counts.append(len(cats) - sum(cur_counts))
    cur_arr = np.asarray(cur_counts, dtype="float64") / len(cats)
    out["psi"] = psi(np.array(base), cur_arr)
    out["tvd"] = float(0.5 * np.abs(cur_arr - np.asarray(base)).sum())
    table = np.array([np.asarray(base) * float(sketch["count"]), np.asarray(cur_counts)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] >= 2:
        out["chi2_pvalue"] = float(stats.chi2_contingency(table)[1])
    else:
        out["chi2_pvalue"] = 1.0
    out["bins"] = {
        "labels": [*keys, OTHER],
        "baseline": base,
        "current": [float(c) for c in cur_arr],
    }
    return out


def judged(stat: dict[str, Any], t: Thresholds) -> bool:
    """Whether a column has enough new values (``min_rows``) to be judged at all."""
    return int(stat.get("count") or 0) >= t.min_rows


def _missing_rose(stat: dict[str, Any], level: float) -> float:
    """One-sided binomial p-value that the new missing rate exceeds ``level``."""
    total = int(stat.get("total") or 0)
    if not total:
        return 1.0
    missing = round(float(stat.get("missing_rate", 0.0)) * total)
    return float(stats.binom.sf(missing - 1, total, min(max(level, 1e-6), 1.0)))


def feature_verdict(stat: dict[str, Any], t: Thresholds, n_tests: int = 1) -> list[str]:
    """The reasons (empty: none) why one column's statistics count as drift under ``t``.

    ``n_tests`` is the number of columns judged in the run: each p-value threshold is divided
    by it (Bonferroni), and a PSI must also exceed its chance level at that rate.
    """
    reasons: list[str] = []
    type_errors = float(stat.get("type_error_rate") or 0.0)
    if type_errors > t.type_error_rate:  # a fact, not a sample statistic: judged at any size
        reasons.append(f"type errors {type_errors:.3f} > {t.type_error_rate} (not numbers)")
    if not judged(stat, t):
        return reasons
    k = max(1, n_tests)
    outside = stat.get("out_of_range_rate")
    if outside is not None and outside > t.out_of_range:
        # Values beyond a baseline of m values' extremes occur at rate 2/(m+1) by chance.
        expected = 2.0 / (int(stat.get("baseline_count") or 1) + 1)
        hits = round(outside * int(stat["count"]))
        if float(stats.binom.sf(hits - 1, int(stat["count"]), expected)) < t.missing_pvalue / k:
            reasons.append(f"out of range {outside:.3f} > {t.out_of_range} (baseline min..max)")
    chance = stat.get("psi_chance")
    if stat.get("psi") is not None and stat["psi"] > t.psi and stat["psi"] > (chance or 0.0):
        reasons.append(f"PSI {stat['psi']:.3f} > {t.psi}")
    if (
        stat.get("ks_pvalue") is not None
        and stat["ks_pvalue"] < t.ks_pvalue / k
        and stat["ks_statistic"] >= t.min_effect
    ):
        reasons.append(
            f"KS p={stat['ks_pvalue']:.2g} < {t.ks_pvalue / k:.2g} "
            f"(distance {stat['ks_statistic']:.3f})"
        )
    if (
        stat.get("chi2_pvalue") is not None
        and stat["chi2_pvalue"] < t.chi2_pvalue / k
        and (stat.get("tvd") or 0.0) >= t.min_effect
    ):
        reasons.append(
            f"chi-square p={stat['chi2_pvalue']:.2g} < {t.chi2_pvalue / k:.2g} "
            f"(TVD {stat['tvd']:.3f})"
        )
    rate = float(stat.get("missing_rate", 0.0))
    base_rate = float(stat.get("baseline_missing_rate") or 0.0)
    if rate > t.missing_rate and _missing_rose(stat, max(t.missing_rate, base_rate)) < (
        t.missing_pvalue / k
    ):
        reasons.append(f"missing rate {rate:.3f} > {t.missing_rate}")
    increase = rate - base_rate
    if increase > t.missing_rate_increase and _missing_rose(stat, base_rate) < (
        t.missing_pvalue / k
    ):
        reasons.append(f"missing rate up {increase:.3f} > {t.missing_rate_increase}")
    return reasons


def _attach_chance(stat: dict[str, Any], sketch: dict[str, Any], t: Thresholds, k: int) -> None:
    """The PSI chance level of this column at the run's corrected rate (``psi_chance``)."""
    bins = stat.get("bins")
    if stat.get("psi") is None or not bins or not judged(stat, t):
        return
    base = tuple(float(b) for b in bins["baseline"])
    stat["psi_chance"] = psi_chance_level(
        base, int(sketch.get("count") or 0), int(stat["count"]), t.psi_pvalue / max(1, k)
    )


@dataclass
class DriftReport:
    """The comparison of new data with a baseline, with the verdicts under some thresholds."""

    features: list[dict[str, Any]]
    prediction: dict[str, Any]
    #: The scores' comparison (probabilities), None when the model or baseline has none.
    score: dict[str, Any] | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    metric_changes: dict[str, float]
    reasons: list[str]
    drift: bool
    rows: int
    #: No column had ``min_rows`` values: nothing was judged (the run's own status).
    insufficient: bool = False


def compare(
    baseline: dict[str, Any],
    data: pd.DataFrame,
    predictions: pd.Series,
    labels: pd.Series | None = None,
    thresholds: Thresholds | None = None,
    scores: pd.Series | None = None,
) -> DriftReport:
    """Compare new ``data`` (and the model's ``predictions`` on it) with ``baseline``.

    Args:
        baseline: a profile from :func:`lifecycle.monitor.profile.build_profile`.
        data: new rows holding at least the baseline's features.
        predictions: the model's predictions on ``data``.
        labels: true labels of ``data``, for metrics.
        thresholds: drift thresholds (defaults when None).
        scores: the model's scores on ``data`` (probabilities, see
            :func:`lifecycle.monitor.profile.model_scores`), compared like a feature when
            the baseline has them.

    Returns:
        The :class:`DriftReport`.
    """
    t = thresholds or Thresholds()
    features = []
    for name in baseline["feature_order"]:
        stat = compare_column(baseline["features"][name], data[name])
        stat["name"] = name
        features.append(stat)
    pred = compare_column(baseline["prediction"], predictions)
    pred["name"] = "prediction"
    score: dict[str, Any] | None = None
    if baseline.get("score") and scores is not None:
        score = compare_column(baseline["score"], scores)
        score["name"] = "score"
    n_tests = sum(judged(s, t) for s in [*features, pred, *([score] if score else [])])
    for stat in features:
        _attach_chance(stat, baseline["features"][stat["name"]], t, n_tests)
        stat["reasons"] = feature_verdict(stat, t, n_tests)
        stat["drift"] = bool(stat["reasons"])
        stat["status"] = "drift" if stat["drift"] else ("ok" if judged(stat, t) else "insufficient")
    _attach_chance(pred, baseline["prediction"], t, n_tests)
    pred_reasons = []
    if (
        judged(pred, t)
        and pred.get("psi") is not None
        and pred["psi"] > t.prediction_psi
        and pred["psi"] > (pred.get("psi_chance") or 0.0)
    ):
        pred_reasons.append(f"prediction PSI {pred['psi']:.3f} > {t.prediction_psi}")
    pred["reasons"] = pred_reasons
    pred["drift"] = bool(pred_reasons)
    pred["status"] = "drift" if pred["drift"] else ("ok" if judged(pred, t) else "insufficient")
    if score is not None:  # the scores' distribution: tested like a numeric feature
        _attach_chance(score, baseline["score"], t, n_tests)
        score["reasons"] = [f"score {r}" for r in feature_verdict(score, t, n_tests)]
        score["drift"] = bool(score["reasons"])
        score["status"] = (
            "drift" if score["drift"] else ("ok" if judged(score, t) else "insufficient")
        )
        pred_reasons.extend(score["reasons"])

    metrics: dict[str, float] = {}
    changes: dict[str, float] = {}
    base_metrics = dict(baseline.get("metrics") or {})
    reasons: list[str] = []
    if labels is not None:
        task = baseline.get("task") or "classification"
        metrics = compute_metrics(task, labels, predictions)
        for key, value in metrics.items():
            if key in base_metrics and key != "labelled_rows":
                changes[key] = float(value) - float(base_metrics[key])
        for key, limit in t.metric_drop.items():
            if key not in changes:
                continue
            worse = -changes[key] if key in HIGHER_IS_BETTER else changes[key]
            if worse > limit:
                reasons.append(
                    f"{key} {base_metrics[key]:.3f} -> {metrics[key]:.3f} "
                    f"(worse by {worse:.3f} > {limit})"
                )
    drifted = [f for f in features if f["drift"]]
    if len(drifted) >= max(1, t.min_drifted_features):
        reasons[:0] = [f"feature {f['name']}: {'; '.join(f['reasons'])}" for f in drifted]
    reasons.extend(pred_reasons)
    insufficient = n_tests == 0
    return DriftReport(
        insufficient=insufficient,
        features=features,
        prediction=pred,
        score=score,
        metrics=metrics,
        baseline_metrics=base_metrics,
        metric_changes=changes,
        reasons=reasons,
        drift=bool(reasons),
        rows=len(data),
    )


def finite_or_none(x: Any) -> Any:
    """``x`` with NaN/inf replaced by None (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
