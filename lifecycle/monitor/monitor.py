"""``monitor``: compare new data with a model version's baseline, log it, act on drift.

New data comes from CSV/Parquet files or folders of them: batch inputs, the scoring server's
input logs, any data. The comparison (:mod:`lifecycle.monitor.drift`) is logged as a run of
the workspace's ``lifecycle-monitoring`` experiment tagged with the model name and version;
the version gets a ``lifecycle.monitor.last`` tag with the verdict; the event goes to the
audit history; on drift the policy's actions run (:mod:`lifecycle.monitor.policy`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.base.audit import record_event, utcnow
from lifecycle.base.errors import MonitoringError
from lifecycle.base.loader import fetched_pyfunc
from lifecycle.base.tags import (
    MONITOR_DRIFT_TAG,
    MONITOR_LAST_TAG,
    MONITOR_MODEL_TAG,
    MONITOR_MODEL_URI_TAG,
    MONITOR_VERSION_TAG,
    MONITOR_WORKSPACE_TAG,
)
from lifecycle.base.workspaces import Workspace, get_or_create_experiment
from lifecycle.monitor.drift import DriftReport, compare
from lifecycle.monitor.policy import ActionContext, Policy, apply_actions, load_policy
from lifecycle.monitor.profile import (
    as_prediction_series,
    load_baseline,
    model_scores,
    split_labels,
)
from lifecycle.monitor.result import MonitorResult, json_clean

logger = logging.getLogger(__name__)

MONITOR_EXPERIMENT = "lifecycle-monitoring"
DATA_SUFFIXES = (".csv", ".parquet", ".pq")


def find_data_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The CSV/Parquet files named by ``inputs`` (folders are searched recursively).

    Hidden files and names starting with ``_`` (writers' temporary files) are skipped.

    Raises:
        MonitoringError: a path does not exist, has an unsupported suffix, or nothing is found.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in DATA_SUFFIXES
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not found:
                raise MonitoringError(
                    f"Folder '{path}' holds no {'/'.join(DATA_SUFFIXES)} files to monitor"
                )
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in DATA_SUFFIXES:
                raise MonitoringError(
                    f"Input '{path}' is not a CSV or Parquet file; expected one of "
                    f"{', '.join(DATA_SUFFIXES)} or a folder of them"
                )
            files.append(path)
        else:
            raise MonitoringError(f"Input '{path}' does not exist")
    if not files:
        raise MonitoringError("No input data given; expected CSV/Parquet files or folders")
    return files


def _typed_rows(baseline: dict[str, Any], data: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The rows whose numeric features are numbers (coerced), and the mask that chose them."""
    keep = pd.Series(True, index=data.index)
    coerced = {}
    for name in baseline["feature_order"]:
        column = data[name]
        kind = baseline["features"][name]["kind"]
        if kind != "numeric" or pd.api.types.is_numeric_dtype(column.dtype):
            continue
        parsed = pd.to_numeric(column, errors="coerce")
        keep &= ~(column.notna() & parsed.isna())
        coerced[name] = parsed
    if not coerced:
        return data, keep
    dropped = int((~keep).sum())
    if dropped:
        logger.warning("%d row(s) with a non-number in a numeric feature not scored", dropped)
    return data.assign(**coerced)[keep].reset_index(drop=True), keep


def read_inputs(inputs: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """All rows of the CSV/Parquet files named by ``inputs``, concatenated.

    Raises:
        MonitoringError: missing or unreadable files, or no rows at all.
    """
    frames = []
    for path in find_data_files(inputs):
        try:
            if path.suffix.lower() == ".csv":
                frames.append(pd.read_csv(path))
            else:
                frames.append(pd.read_parquet(path))
        except Exception as exc:
            raise MonitoringError(
                f"Cannot read '{path}': {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(df) == 0:
        raise MonitoringError(f"The input data ({', '.join(map(str, inputs))}) has no rows")
    return df


def _metric_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(name))[:200]


def _run_metrics(report: DriftReport) -> dict[str, float]:
    out: dict[str, float] = {
        "rows": float(report.rows),
        "drift": 1.0 if report.drift else 0.0,
        "drifted_features": float(sum(f["drift"] for f in report.features)),
    }
    psis = [f["psi"] for f in report.features if f.get("psi") is not None]
    if psis:
        out["max_psi"] = float(max(psis))
    if report.prediction.get("psi") is not None:
        out["prediction_psi"] = float(report.prediction["psi"])
    for f in report.features:
        key = _metric_key(f["name"])
        for stat in ("psi", "ks_pvalue", "chi2_pvalue", "missing_rate"):
            value = f.get(stat)
            if value is not None:
                out[f"{stat}.{key}"] = float(value)
    for k, v in report.metrics.items():
        out[f"metric.{k}"] = float(v)
    for k, v in report.metric_changes.items():
        out[f"metric_change.{k}"] = float(v)
    return out


def monitor_history(ws: Workspace, name: str, version: str | int) -> list[dict[str, Any]]:
    """This version's monitor runs, oldest first: ``run_id``, ``start_time``, ``drift``, metrics."""
    client = ws.client()
    exp = client.get_experiment_by_name(MONITOR_EXPERIMENT)
    if exp is None:
        return []
    esc = name.replace("'", "\\'")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{MONITOR_MODEL_TAG}` = '{esc}' and tags.`{MONITOR_VERSION_TAG}` = '{version}'",
        order_by=["attribute.start_time ASC"],
        max_results=1000,
    )
    return [
        {
            "run_id": r.info.run_id,
            "start_time": r.info.start_time,
            "drift": r.data.tags.get(MONITOR_DRIFT_TAG) == "true",
            "metrics": dict(r.data.metrics),
        }
        for r in runs
    ]


def monitor(
    ws: Workspace,
    model_uri: str,
    inputs: Sequence[str | os.PathLike[str]] | pd.DataFrame,
    *,
    labels: str | pd.Series | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
) -> MonitorResult:
    """Compare new data with the baseline of the model version ``model_uri`` names.

    Args:
        ws: the workspace holding the model.
        model_uri: ``models:/NAME/VERSION|STAGE|latest`` or ``models:/NAME@ALIAS``.
        inputs: CSV/Parquet files or folders (or a DataFrame).
        labels: the label column of the inputs (or the labels), for metrics.
        report_dir: where to write the HTML report with its PNG figures.
        policy: a :class:`Policy`, a policy YAML file, or None for the default policy.

    Returns:
        The :class:`MonitorResult`; ``exit_code`` is 3 when the policy says drift must fail
        the caller (:meth:`MonitorResult.raise_for_drift`).

    Raises:
        ModelNotFoundError: the model URI resolves to nothing.
        MonitoringError: no baseline, unreadable data, missing feature columns, the model
            cannot predict the data.
        ConfigError: an invalid policy file.
    """

    from lifecycle.base.refs import resolve_model

    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    resolved = resolve_model(ws, model_uri)
    if resolved.name is None or resolved.version is None:
        raise MonitoringError(
            f"Model URI '{model_uri}' is a local directory; monitoring needs a registered "
            "version (models:/NAME/VERSION) whose baseline is stored in the registry"
        )
    name, version = resolved.name, resolved.version
    baseline = load_baseline(ws, name, version)
    if isinstance(inputs, pd.DataFrame):
        data, input_names = inputs.reset_index(drop=True), ["<DataFrame>"]
    else:
        input_list = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        data, input_names = read_inputs(input_list), [str(p) for p in input_list]
    data, y, _ = split_labels(data, labels)
    features = list(baseline["feature_order"])
    missing = [c for c in features if c not in data.columns]
    if missing:
        extra = [str(c) for c in data.columns if c not in features]
        raise MonitoringError(
            f"The input data lacks baseline feature(s) {', '.join(missing)} of {name} "
            f"v{version}; it has extra column(s): {', '.join(extra) or 'none'}"
        )
    data = data[features]
    # Rows with a type error (text in a numeric feature) are a data-quality finding of their
    # own; the model predicts the others, and their labels alone enter the metrics.
    scored, keep = _typed_rows(baseline, data)
    if y is not None:
        y = y[keep.to_numpy()].reset_index(drop=True)
    with fetched_pyfunc(ws, resolved.pinned_uri, error=MonitoringError) as (_, model):
        try:
            output = model.predict(scored)
            predictions = as_prediction_series(output)
        except Exception as exc:
            raise MonitoringError(
                f"{name} v{version} cannot predict the input data: {type(exc).__name__}: {exc}".splitlines()[
                    0
                ]
            ) from exc
        scores = model_scores(model, scored, output) if baseline.get("score") else None
    report = compare(baseline, data, predictions, y, pol.thresholds, scores=scores)

    client = ws.client()
    exp_id = get_or_create_experiment(ws, MONITOR_EXPERIMENT)
    run = client.create_run(
        exp_id,
        run_name=f"monitor {name} v{version}",
        tags={
            MONITOR_MODEL_TAG: name,
            MONITOR_VERSION_TAG: str(version),
            MONITOR_DRIFT_TAG: "true" if report.drift else "false",
            MONITOR_MODEL_URI_TAG: str(model_uri),
            MONITOR_WORKSPACE_TAG: ws.name,
        },
    )
    run_id = run.info.run_id
    result = MonitorResult(
        model=name,
        version=str(version),
        workspace=ws.name,
        model_uri=str(model_uri),
        drift=report.drift,
        rows=report.rows,
        features=report.features,
        prediction=report.prediction,
        score=report.score,
        metrics=report.metrics,
        baseline_metrics=report.baseline_metrics,
        metric_changes=report.metric_changes,
        reasons=report.reasons,
        run_id=run_id,
        policy=pol.to_dict(),
        inputs=input_names,
        insufficient=report.insufficient,
    )
    try:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in _run_metrics(report).items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        client.log_batch(
            run_id,
            params=[
                Param("model_uri", str(model_uri)[:6000]),
                Param("inputs", ",".join(input_names)[:6000]),
                Param("policy", str(pol.source or "default")[:6000]),
            ],
        )
        drifted = [f["name"] for f in report.features if f["drift"]]
        record_event(
            ws,
            name,
            "monitor",
            version=version,
            details={
                "drift": report.drift,
                "drifted_features": drifted,
                "metrics": report.metrics,
                "rows": report.rows,
                "monitor_run_id": run_id,
                "reasons": report.reasons[:10],
            },
        )
        if report.drift:
            ctx = ActionContext(
                ws=ws,
                name=name,
                version=str(version),
                model_uri=str(model_uri),
                reasons=report.reasons,
                inputs=input_names,
                run_id=run_id,
            )
            result.actions, result.exit_code = apply_actions(pol, ctx)
        last = {
            "at": utcnow(),
            "run_id": run_id,
            "drift": report.drift,
            "drifted_features": drifted[:20],
            "metrics": report.metrics,
            "rows": report.rows,
            "actions": [a.get("action") for a in result.actions],
        }
        last_json = json.dumps(json_clean(last))
        if len(last_json) > 4900:  # MLflow caps version tag values at 5000 characters
            last["drifted_features"] = drifted[:3]
            last["metrics"] = {}
            last_json = json.dumps(json_clean(last))
        client.set_model_version_tag(name, str(version), MONITOR_LAST_TAG, last_json)
        if report_dir is not None:
            from lifecycle.monitor.report import write_report

            history = monitor_history(ws, name, version)
            result.report = str(
                write_report(result, baseline, history, report_dir, thresholds=pol.thresholds)
            )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "monitor_result.json"
            out.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
            client.log_artifact(run_id, str(out), "monitor")
        if result.report:
            client.log_artifacts(run_id, str(Path(result.report).parent), "monitor/report")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    logger.info("monitored %s v%s on %d rows: drift=%s", name, version, report.rows, report.drift)
    return result


def baseline_from_files(
    ws: Workspace,
    model_uri: str,
    data: Sequence[str | os.PathLike[str]],
    *,
    labels: str | None = None,
) -> dict[str, Any]:
    """Attach a baseline to the version ``model_uri`` names, profiled on CSV/Parquet ``data``.

    Returns:
        A summary: ``model``, ``version``, ``rows``, ``features``, ``metrics``, ``task``.

    Raises:
        ModelNotFoundError, MonitoringError: as :func:`lifecycle.monitor.profile.attach_baseline`.
    """
    from lifecycle.base.refs import resolve_model
    from lifecycle.monitor.profile import attach_baseline

    resolved = resolve_model(ws, model_uri)
    if resolved.name is None or resolved.version is None:
        raise MonitoringError(
            f"Model URI '{model_uri}' is a local directory; a baseline is stored with a "
            "registered version (models:/NAME/VERSION)"
        )
    df = read_inputs(list(data))
    profile = attach_baseline(ws, resolved.name, resolved.version, df, labels=labels)
    return {
        "model": resolved.name,
        "version": resolved.version,
        "workspace": ws.name,
        "rows": profile["rows"],
        "features": profile["feature_order"],
        "task": profile["task"],
        "metrics": profile["metrics"],
    }
