"""Promotion gates: metric thresholds, a holdout comparison with the champion, a smoke test.

Each gate yields a :class:`GateResult` (value, threshold, pass/fail, detail) so a refused
promotion can show a table of every gate. Gates only read: they never write to a workspace.

- Metric thresholds (``accuracy>=0.9``, ``rmse<3.5``) are checked on the source run's metrics;
  a metric the run does not have fails the gate and the detail names the metrics it has.
- The holdout gate scores the candidate and the champion (the target's current version in the
  requested stage) on the same labelled CSV, computes the task's standard metrics and applies
  :class:`mlflow.models.MetricThreshold` with ``threshold = champion -/+ min_delta``: the
  candidate may be worse than the champion by at most ``min_delta``.
- The smoke test (:mod:`lifecycle.registry.smoke`) loads a model directory in a fresh Python
  process and predicts its own input example, so a model that only works in the promoting
  process is caught.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lifecycle.base.errors import InvalidArgumentError, PromotionError
from lifecycle.base.loader import fetched_pyfunc
from lifecycle.base.metrics import DEFAULT_METRIC, infer_task, metrics_for, task_metrics
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_GATE_RE = re.compile(
    r"^\s*([A-Za-z_][\w.\-/]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$"
)

#: Standard metrics per task, and whether greater is better.


@dataclass
class GateResult:
    """The outcome of one gate. ``passed`` is None when the gate was skipped."""

    gate: str
    kind: str
    value: Any
    threshold: str
    passed: bool | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return asdict(self)


@dataclass(frozen=True)
class MetricGate:
    """A parsed threshold expression: ``metric op threshold``."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(expression: str) -> MetricGate:
    """Parse ``accuracy>=0.9`` into a :class:`MetricGate`.

    Raises:
        InvalidArgumentError: not ``METRIC OP NUMBER`` with OP one of >=, <=, >, <, ==, !=.
    """
    match = _GATE_RE.match(str(expression))
    if not match:
        raise InvalidArgumentError(
            f"Invalid gate '{expression}'. Expected METRIC OP NUMBER, e.g. accuracy>=0.9 or "
            f"rmse<3.5, with OP one of {', '.join(_OPS)}"
        )
    metric, op, number = match.groups()
    try:
        threshold = float(number)
    except ValueError:
        raise InvalidArgumentError(
            f"Invalid gate '{expression}': '{number}' is not a number"
        ) from None
    return MetricGate(metric, op, threshold)


def check_metric_gates(
    metrics: Mapping[str, float], gates: Iterable[str | MetricGate]
) -> list[GateResult]:
    """Check each threshold against ``metrics`` (the source run's latest values).

    Raises:
        InvalidArgumentError: a gate expression does not parse.
    """
    parsed = [g if isinstance(g, MetricGate) else parse_gate(g) for g in gates]
    results = []
    for gate in parsed:
        threshold = f"{gate.op} {gate.threshold:g}"
        if gate.metric not in metrics:
            existing = ", ".join(sorted(metrics)) or "none"
            results.append(
                GateResult(
                    str(gate),
                    "metric",
                    None,
                    threshold,
                    False,
                    f"metric '{gate.metric}' not in the source run; it has: {existing}",
                )
            )
            continue
        value = float(metrics[gate.metric])
        ok = not math.isnan(value) and _OPS[gate.op](value, gate.threshold)
        results.append(GateResult(str(gate), "metric", value, threshold, ok, "source run metric"))
    return results


def load_holdout(path: str | Path, target: str) -> tuple[Any, Any]:
    """Read a labelled CSV: (features, labels).

    Raises:
        InvalidArgumentError: missing file, empty file, or no column ``target``.
    """
    import pandas as pd

    csv = Path(path)
    if not csv.is_file():
        raise InvalidArgumentError(f"Holdout file '{csv}' does not exist")
    try:
        data = pd.read_csv(csv)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InvalidArgumentError(f"Holdout file '{csv}' is not a readable CSV: {exc}") from None
    if target not in data.columns:
        raise InvalidArgumentError(
            f"Target column '{target}' is not in holdout file '{csv}'. "
            f"Columns: {', '.join(map(str, data.columns))}"
        )
    if data.empty:
        raise InvalidArgumentError(f"Holdout file '{csv}' has no rows")
    return data.drop(columns=[target]), data[target]


def check_holdout(path: str | Path, target: str, metric: str | None = None) -> str:
    """Validate holdout options before any work; returns the metric that will be compared.

    Raises:
        InvalidArgumentError: bad CSV, missing target column, or a metric of the wrong task.
    """
    _, labels = load_holdout(path, target)
    return choose_metric(labels, metric)[1]


def choose_metric(labels: Any, metric: str | None) -> tuple[str, str]:
    """The task the labels show and the metric to compare (the task's default if None).

    Raises:
        InvalidArgumentError: ``metric`` is not a metric of that task.
    """
    task = infer_task(labels)
    allowed = metrics_for(task)
    chosen = metric or DEFAULT_METRIC[task]
    if chosen not in allowed:
        raise InvalidArgumentError(
            f"Metric '{chosen}' is not a {task} metric. Choose one of {', '.join(allowed)}"
        )
    return task, chosen


def _predict(ws: Workspace, model_uri: str, features: Any) -> Any:
    import numpy as np

    with fetched_pyfunc(ws, model_uri, error=PromotionError) as (_, model):
        pred = model.predict(features)
    arr = np.asarray(pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise InvalidArgumentError(
            f"Model {model_uri} in '{ws.name}' returns {arr.shape[1]} columns per row; the "
            "holdout gate needs one prediction per row"
        )
    return arr


def holdout_gate(
    candidate: tuple[Workspace, str],
    champion: tuple[Workspace, str] | None,
    holdout: str | Path,
    target: str,
    *,
    metric: str | None = None,
    min_delta: float = 0.0,
) -> tuple[GateResult, dict[str, Any]]:
    """Compare the candidate with the champion on a labelled holdout set.

    Args:
        candidate: (workspace, pinned model URI) of the version being promoted.
        champion: (workspace, pinned model URI) of the target's current version, or None.
        holdout: CSV with the features and the ``target`` column.
        metric: the metric to compare (default: accuracy, or rmse for regression).
        min_delta: how much worse than the champion the candidate may be.

    Returns:
        The gate result and a report ``{"task", "metric", "candidate": {...}, "champion": {...}}``.

    Raises:
        InvalidArgumentError: bad CSV, unknown metric for the task, negative ``min_delta``.
    """
    from mlflow.models import EvaluationResult, MetricThreshold
    from mlflow.models.evaluation.validation import (
        ModelValidationFailedException,
        validate_evaluation_results,
    )

    if min_delta < 0:
        raise InvalidArgumentError(f"--min-delta must be >= 0, got {min_delta}")
    features, labels = load_holdout(holdout, target)
    task, metric = choose_metric(labels, metric)
    greater = metrics_for(task)[metric]
    cand_metrics = task_metrics(task, labels, _predict(candidate[0], candidate[1], features))
    report: dict[str, Any] = {
        "task": task,
        "metric": metric,
        "rows": len(labels),
        "candidate": cand_metrics,
        "champion": None,
    }
    name = f"holdout {metric}"
    if champion is None:
        return (
            GateResult(
                name,
                "holdout",
                cand_metrics[metric],
                "no champion",
                True,
                "no champion in the target stage: nothing to compare with",
            ),
            report,
        )
    champ_metrics = task_metrics(task, labels, _predict(champion[0], champion[1], features))
    report["champion"] = champ_metrics
    champ = champ_metrics[metric]
    bound = champ - min_delta if greater else champ + min_delta
    try:
        validate_evaluation_results(
            {metric: MetricThreshold(threshold=float(bound), greater_is_better=greater)},
            EvaluationResult(metrics={metric: cand_metrics[metric]}, artifacts={}),
        )
        ok = True
    except ModelValidationFailedException:
        ok = False
    sign = ">=" if greater else "<="
    detail = (
        f"champion {champion[1]} in '{champion[0].name}' scored {champ:.6g}; "
        f"min_delta {min_delta:g} ({len(labels)} rows)"
    )
    return GateResult(
        name, "holdout", cand_metrics[metric], f"{sign} {bound:.6g}", ok, detail
    ), report
