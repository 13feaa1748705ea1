"""The outcome of a monitoring run (:class:`MonitorResult`): what ``--json`` prints, what the
report renders, and the exit code a scheduler sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lifecycle.base.errors import DriftDetectedError, InsufficientDataError
from lifecycle.monitor.drift import finite_or_none

_FEATURE_KEYS = (
    "name",
    "kind",
    "psi",
    "ks_statistic",
    "ks_pvalue",
    "chi2_pvalue",
    "tvd",
    "missing_rate",
    "baseline_missing_rate",
    "type_error_rate",
    "out_of_range_rate",
    "drift",
    "status",
    "count",
    "psi_chance",
    "reasons",
)


@dataclass
class MonitorResult:
    """The outcome of :func:`monitor`; ``to_dict()`` is the ``--json`` output."""

    model: str
    version: str
    workspace: str
    model_uri: str
    drift: bool
    rows: int
    features: list[dict[str, Any]]
    prediction: dict[str, Any]
    score: dict[str, Any] | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    metric_changes: dict[str, float]
    reasons: list[str]
    actions: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int = 0
    run_id: str | None = None
    report: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    #: No column had enough rows to be judged (``Thresholds.min_rows``).
    insufficient: bool = False

    @property
    def status(self) -> str:
        """``drift``, ``no drift`` or ``insufficient data``."""
        if self.drift:
            return "drift"
        return "insufficient data" if self.insufficient else "no drift"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly result (strict JSON: NaN becomes null)."""
        return json_clean(
            {
                "model": self.model,
                "version": self.version,
                "workspace": self.workspace,
                "model_uri": self.model_uri,
                "drift": self.drift,
                "status": self.status,
                "rows": self.rows,
                "features": [{k: f.get(k) for k in _FEATURE_KEYS} for f in self.features],
                "prediction": {k: self.prediction.get(k) for k in _FEATURE_KEYS},
                "score": None
                if self.score is None
                else {k: self.score.get(k) for k in _FEATURE_KEYS},
                "metrics": self.metrics,
                "baseline_metrics": self.baseline_metrics,
                "metric_changes": self.metric_changes,
                "reasons": self.reasons,
                "actions": self.actions,
                "exit_code": self.exit_code,
                "run_id": self.run_id,
                "report": self.report,
                "policy": self.policy,
                "inputs": self.inputs,
            }
        )

    def raise_for_drift(self) -> None:
        """Raise :class:`DriftDetectedError` (exit code 3) when the policy asked for it, or
        :class:`InsufficientDataError` (exit code 4) when nothing could be judged."""
        if self.insufficient and not self.drift:
            raise InsufficientDataError(
                f"Insufficient data to monitor {self.model} v{self.version} in "
                f"'{self.workspace}': {self.rows} rows, no column has the "
                f"{self.policy.get('thresholds', {}).get('min_rows', 30)} values needed "
                "(policy threshold min_rows)"
            )
        if self.exit_code:
            first = self.reasons[0] if self.reasons else "drift"
            more = f" (+{len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
            raise DriftDetectedError(
                f"Drift detected for {self.model} v{self.version} in '{self.workspace}': "
                f"{first}{more}"
            )


def json_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()  # numpy scalars
    return finite_or_none(obj)
