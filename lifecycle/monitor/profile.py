"""Baseline profiles: a compact JSON sketch of the data a model version was trained or sampled on.

A profile holds, per feature, a distribution sketch (decile bins, and the sorted sample itself
up to 2,000 values or 1,001 quantiles beyond, for numeric features; value frequencies for
categorical and few-valued numeric ones) and the missing rate, all stored exactly (float64,
no rounding: a sample compared with itself gives PSI 0 and KS distance 0 at any scale);
the same sketch of the model's predictions on that data; and, when labels were given, the
model's metrics on them. It is stored with the model version as an artifact of the version's
run (``lifecycle/baseline.json``) plus the version tag ``lifecycle.baseline`` naming that
artifact path, so a promotion that deep-copies the run's artifacts carries it along.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.base.errors import MonitoringError
from lifecycle.base.loader import fetched_pyfunc
from lifecycle.base.metrics import infer_task, task_metrics
from lifecycle.base.tags import BASELINE_TAG
from lifecycle.base.workspaces import Workspace, quiet_mlflow_progress

logger = logging.getLogger(__name__)

PROFILE_FORMAT = "lifecycle.baseline/1"
BASELINE_ARTIFACT = "lifecycle/baseline.json"
PREDICTION = "prediction"
#: Numeric columns with at most this many distinct values are sketched by value frequencies.
DISCRETE_MAX_VALUES = 20
MAX_CATEGORIES = 50
N_BINS = 10
N_QUANTILES = 1001
#: Numeric samples up to this size are stored whole (sorted): KS is then exact (ks_2samp).
EXACT_SAMPLE_MAX = 2000
OTHER = "__other__"


def _round(x: float) -> float:
    """Six significant digits keep the JSON compact without hurting the statistics."""
    if x is None or not math.isfinite(float(x)):
        return float(x) if x is not None else float("nan")
    return float(f"{float(x):.6g}")


def is_numeric(series: pd.Series) -> bool:
    """True for numeric (not boolean) columns; datetimes count as numeric (epoch seconds)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return False
    return bool(
        pd.api.types.is_numeric_dtype(series.dtype)
        or pd.api.types.is_datetime64_any_dtype(series.dtype)
    )


def numeric_values(series: pd.Series) -> np.ndarray:
    """The non-missing values of a numeric or datetime column as float64."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        values = series.dropna().astype("int64").to_numpy(dtype="float64") / 1e9
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return values[np.isfinite(values)]


def category_values(series: pd.Series) -> pd.Series:
    """The non-missing values of a column as strings (the keys of categorical sketches)."""
    return series.dropna().astype(str)


def sketch_column(series: pd.Series) -> dict[str, Any]:
    """A compact distribution sketch of one column.

    Returns:
        ``{"kind": "numeric"|"categorical", "count", "missing_rate", ...}``: numeric sketches
        carry ``sorted_values`` (the whole sample, up to :data:`EXACT_SAMPLE_MAX`) or
        ``quantiles`` (1,001), ``bin_edges``/``bin_fractions`` (deciles), mean/std/min/max
        and, for few-valued columns, ``values``/``frequencies``; categorical ones carry
        ``categories``/``frequencies`` and ``other_fraction``. Every number is the exact
        float64 (JSON round-trips it), so comparing a sample with itself finds no change.
    """
    total = len(series)
    missing = int(series.isna().sum())
    out: dict[str, Any] = {"missing_rate": missing / total if total else 0.0}
    if is_numeric(series):
        values = numeric_values(series)
        out["missing_rate"] = (total - len(values)) / total if total else 0.0
        out.update(kind="numeric", count=len(values))
        if len(values) == 0:
            out.update(sorted_values=[], bin_edges=[], bin_fractions=[])
            return out
        edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)[1:-1]))
        idx = np.searchsorted(edges, values, side="right")
        fractions = np.bincount(idx, minlength=len(edges) + 1) / len(values)
        out.update(
            bin_edges=[float(e) for e in edges],
            bin_fractions=[float(f) for f in fractions],
            mean=float(values.mean()),
            std=float(values.std()),
            min=float(values.min()),
            max=float(values.max()),
        )
        uniq, counts = np.unique(values, return_counts=True)
        if len(uniq) <= DISCRETE_MAX_VALUES:  # its values and frequencies are the exact CDF
            out.update(
                discrete=True,
                values=[float(u) for u in uniq],
                frequencies=[float(c / len(values)) for c in counts],
            )
        elif len(values) <= EXACT_SAMPLE_MAX:
            out["sorted_values"] = [float(v) for v in np.sort(values)]
        else:
            qs = np.quantile(values, np.linspace(0, 1, N_QUANTILES))
            out["quantiles"] = [float(q) for q in qs]
        return out
    cats = category_values(series)
    freq = cats.value_counts(normalize=True, sort=True)
    top = freq.iloc[:MAX_CATEGORIES]
    out.update(
        kind="categorical",
        count=len(cats),
        categories=[str(c) for c in top.index],
        frequencies=[float(f) for f in top.to_numpy()],
        other_fraction=float(freq.iloc[MAX_CATEGORIES:].sum()),
    )
    return out


def as_prediction_series(predictions: Any, index: pd.Index | None = None) -> pd.Series:
    """A model's predictions as one Series (first column of a multi-column output)."""
    if isinstance(predictions, pd.DataFrame):
        for col in (PREDICTION, "predictions", "Scored Labels"):
            if col in predictions.columns:
                return predictions[col].reset_index(drop=True).rename(PREDICTION)
        return predictions.iloc[:, 0].reset_index(drop=True).rename(PREDICTION)
    if isinstance(predictions, pd.Series):
        return predictions.reset_index(drop=True).rename(PREDICTION)
    arr = np.asarray(predictions)
    if arr.ndim > 1:
        arr = arr[:, 0] if arr.shape[1] else arr.reshape(-1)
    return pd.Series(arr, name=PREDICTION)


def model_scores(model: Any, features: pd.DataFrame, output: Any = None) -> pd.Series | None:
    """The model's scores beside its labels: a classifier's probability of the positive class
    (two classes; the larger label, as in the metrics) or of its predicted class (more), from
    Designer's ``Scored Probabilities`` column or the raw model's ``predict_proba``; None when
    the model offers neither (regressors: their predictions already are values)."""
    if isinstance(output, pd.DataFrame):
        probs = [c for c in output.columns if str(c).startswith("Scored Probabilities")]
        if len(probs) == 1:
            return pd.to_numeric(output[probs[0]], errors="coerce").reset_index(drop=True)
        if probs:
            return output[probs].astype("float64").max(axis=1).reset_index(drop=True)
    if "method" in _param_names(model):  # AutoML's loader: the probabilities per class
        try:
            frame = model.predict(features, params={"method": "predict_proba"})
        except Exception as exc:
            logger.debug("no scores for the prediction drift: %s", exc)
            return None
        if isinstance(frame, pd.DataFrame) and frame.shape[1] >= 2:
            columns = sorted(frame.columns, key=str)
            if frame.shape[1] == 2:
                return frame[columns[-1]].astype("float64").reset_index(drop=True)
            return frame.astype("float64").max(axis=1).reset_index(drop=True)
        return None
    try:
        raw = model.get_raw_model()
        proba = np.asarray(raw.predict_proba(features), dtype="float64")
    except Exception as exc:  # no raw model, no predict_proba, or it refuses the frame
        logger.debug("no scores for the prediction drift: %s", exc)
        return None
    if proba.ndim != 2 or proba.shape[1] < 2:
        return None
    score = proba[:, -1] if proba.shape[1] == 2 else proba.max(axis=1)
    return pd.Series(score, name="score")


def _param_names(model: Any) -> set[str]:
    try:
        schema = model.metadata.get_params_schema()
    except Exception:
        return set()
    return {p.name for p in schema.params} if schema is not None else set()


def compute_metrics(task: str, labels: pd.Series, predictions: pd.Series) -> dict[str, float]:
    """The model's metrics for ``task`` (:func:`lifecycle.base.metrics.task_metrics`),
    rounded for the stored profile."""
    return {k: _round(v) for k, v in task_metrics(task, labels, predictions).items()}


def split_labels(
    df: pd.DataFrame, labels: str | Sequence[Any] | pd.Series | None
) -> tuple[pd.DataFrame, pd.Series | None, str | None]:
    """Separate features from labels given as a column name or as values.

    Raises:
        MonitoringError: the label column is absent, or the label count differs from the rows.
    """
    if labels is None:
        return df, None, None
    if isinstance(labels, str):
        if labels not in df.columns:
            raise MonitoringError(
                f"Label column '{labels}' is not in the data. Columns: {', '.join(map(str, df.columns))}"
            )
        return df.drop(columns=[labels]), df[labels].reset_index(drop=True), labels
    series = pd.Series(labels).reset_index(drop=True)
    if len(series) != len(df):
        raise MonitoringError(f"Got {len(series)} labels for {len(df)} rows; expected one per row")
    return df, series, str(series.name) if series.name is not None else None


def _model_features(model: Any, features: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``features`` that the model's signature names, in its order; others
    (a label column given without ``--labels``, ids) are not profiled as features.

    Raises:
        MonitoringError: the sample lacks a column the signature names.
    """
    try:
        schema = model.metadata.get_input_schema()
    except AttributeError:
        return features
    if schema is None or not schema.has_input_names():
        return features
    names = [str(n) for n in schema.input_names()]
    have = [str(c) for c in features.columns]
    missing = [n for n in names if n not in have]
    if missing:
        raise MonitoringError(
            f"The baseline sample lacks the model's input column(s) {', '.join(missing)} "
            f"(it has: {', '.join(have)})"
        )
    extra = [c for c in have if c not in names]
    if extra:
        logger.info("columns outside the model's signature, not profiled: %s", ", ".join(extra))
    out = features.copy()
    out.columns = have
    return out[names]


def build_profile(
    model: Any,
    sample_df: pd.DataFrame,
    labels: str | Sequence[Any] | pd.Series | None = None,
) -> dict[str, Any]:
    """The baseline profile of ``model`` on ``sample_df`` (features only; labels apart).

    Args:
        model: anything with ``predict(DataFrame)`` (an MLflow pyfunc model).
        sample_df: training or sample rows.
        labels: a column of ``sample_df`` holding the labels, or the labels themselves.

    Returns:
        The profile as a JSON-serialisable dict (format ``lifecycle.baseline/1``).

    Raises:
        MonitoringError: empty sample, bad labels, or the model cannot predict the sample.
    """
    if sample_df is None or len(sample_df) == 0:
        raise MonitoringError("The baseline sample is empty; expected at least one row")
    features, y, label_name = split_labels(sample_df.reset_index(drop=True), labels)
    features = _model_features(model, features)
    try:
        output = model.predict(features)
        preds = as_prediction_series(output)
    except Exception as exc:
        raise MonitoringError(
            f"The model cannot predict the baseline sample: {type(exc).__name__}: {exc}".splitlines()[
                0
            ]
        ) from exc
    profile: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "rows": len(features),
        "feature_order": [str(c) for c in features.columns],
        "features": {str(c): sketch_column(features[c]) for c in features.columns},
        "prediction": sketch_column(preds),
        "score": None,
        "label": label_name,
        "task": None,
        "metrics": {},
    }
    scores = model_scores(model, features, output)
    if scores is not None:
        profile["score"] = sketch_column(scores)
    if y is not None:
        task = infer_task(y.dropna())
        profile["task"] = task
        profile["metrics"] = compute_metrics(task, y, preds)
    return profile


def attach_baseline(
    ws: Workspace,
    name: str,
    version: str | int,
    sample_df: pd.DataFrame,
    labels: str | Sequence[Any] | pd.Series | None = None,
    reference_metrics: dict[str, float] | None = None,
    reference_source: str | None = None,
) -> dict[str, Any]:
    """Profile version ``version`` of ``name`` on ``sample_df`` and store the profile with it.

    The profile becomes the artifact ``lifecycle/baseline.json`` of the version's run, and the
    version tag ``lifecycle.baseline`` names that path (relative to the version's run, so a
    copy of the run in another workspace still resolves). The event is recorded in the audit
    history.

    Args:
        ws: workspace holding the version.
        name, version: the registered model version.
        sample_df: training or sample rows (the features, plus the label column if ``labels``
            names one).
        labels: label column name or label values, for baseline metrics.
        reference_metrics, reference_source: the version's metrics on labelled data it was
            not trained on (e.g. ``holdout holdout.csv``); they become the baseline's
            ``metrics`` (what monitoring compares with), the sample's are kept as
            ``sample_metrics``.

    Returns:
        The stored profile.

    Raises:
        ModelNotFoundError: no such version.
        MonitoringError: bad sample or labels, or the model cannot predict them.
    """

    from lifecycle.base.audit import record_event
    from lifecycle.base.refs import get_model_version

    mv = get_model_version(ws, name, version)
    with fetched_pyfunc(ws, f"models:/{name}/{mv.version}", error=MonitoringError) as (_, model):
        profile = build_profile(model, sample_df, labels)
    profile.update(model=name, version=str(mv.version))
    profile["metrics_source"] = "sample" if profile["metrics"] else None
    if reference_metrics:
        profile["sample_metrics"] = profile["metrics"]
        profile["metrics"] = {k: _round(v) for k, v in reference_metrics.items()}
        profile["metrics_source"] = reference_source or "reference"
    from lifecycle.base.audit import utcnow

    profile["created_at"] = utcnow()
    client = ws.client()
    run_id = mv.run_id
    tag_value = BASELINE_ARTIFACT
    if not run_id:
        # A version registered without a run: keep the profile in a run of its own.
        from lifecycle.base.workspaces import get_or_create_experiment

        exp = get_or_create_experiment(ws, "lifecycle-baselines")
        run = client.create_run(exp, run_name=f"baseline {name} v{mv.version}")
        run_id = run.info.run_id
        client.set_terminated(run_id, "FINISHED")
        tag_value = f"runs:/{run_id}/{BASELINE_ARTIFACT}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(BASELINE_ARTIFACT).name
        path.write_text(json.dumps(profile, sort_keys=True, allow_nan=True), encoding="utf-8")
        client.log_artifact(run_id, str(path), str(Path(BASELINE_ARTIFACT).parent))
    client.set_model_version_tag(name, str(mv.version), BASELINE_TAG, tag_value)
    record_event(
        ws,
        name,
        "baseline",
        version=mv.version,
        details={
            "rows": profile["rows"],
            "features": len(profile["features"]),
            "metrics": profile["metrics"],
            "artifact": tag_value,
        },
    )
    logger.info("stored a baseline of %s v%s (%d rows)", name, mv.version, profile["rows"])
    return profile


def load_baseline(ws: Workspace, name: str, version: str | int) -> dict[str, Any]:
    """The baseline profile stored with a model version.

    Raises:
        MonitoringError: the version has no baseline (the message says how to attach one).
    """
    from mlflow.artifacts import download_artifacts

    from lifecycle.base.refs import get_model_version

    mv = get_model_version(ws, name, version)
    tag = (mv.tags or {}).get(BASELINE_TAG) or BASELINE_ARTIFACT
    hint = (
        f"Model '{name}' version {mv.version} in workspace '{ws.name}' has no baseline; "
        f"attach one with: lifecycle baseline models:/{name}/{mv.version} -w {ws.name} --data SAMPLE.csv"
    )
    if tag.startswith("runs:/"):
        run_id, _, rel = tag[len("runs:/") :].partition("/")
    else:
        run_id, rel = mv.run_id, tag
    if not run_id:
        raise MonitoringError(hint)
    with tempfile.TemporaryDirectory() as tmp, quiet_mlflow_progress():
        try:
            local = download_artifacts(
                run_id=run_id, artifact_path=rel, dst_path=tmp, tracking_uri=ws.tracking_uri
            )
        except Exception as exc:
            logger.debug("no baseline artifact for %s v%s: %s", name, mv.version, exc)
            raise MonitoringError(hint) from None
        try:
            profile: dict[str, Any] = json.loads(Path(local).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MonitoringError(
                f"The baseline of '{name}' version {mv.version} ({tag}) is not valid JSON: {exc}"
            ) from exc
    if profile.get("format") != PROFILE_FORMAT:
        raise MonitoringError(
            f"The baseline of '{name}' version {mv.version} has format "
            f"{profile.get('format')!r}; expected {PROFILE_FORMAT!r}"
        )
    return profile
