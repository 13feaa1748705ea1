"""Prometheus counters and histograms of a scoring server, summed across worker processes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lifecycle.base.files import atomic_write_text
from serving.fastpath import ModelInfo

logger = logging.getLogger(__name__)


class Metrics:
    """Prometheus counters and histograms of one server process."""

    LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = [0] * (len(self.LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches = [0] * (len(self.BATCH_BUCKETS) + 1)
        self.batch_sum = 0
        self.fast = 0
        self.general = 0

    def observe(self, route: str, status: int, seconds: float | None) -> None:
        """Count one answered request (and its latency for /invocations)."""
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            self.latency[_bucket(self.LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def observe_batch(self, rows: int) -> None:
        """Count one model call of ``rows`` rows."""
        self.batches[_bucket(self.BATCH_BUCKETS, rows)] += 1
        self.batch_sum += rows

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-friendly data (for other workers' /metrics)."""
        return {
            "requests": [[r, s, n] for (r, s), n in self.requests.items()],
            "latency": self.latency,
            "latency_sum": self.latency_sum,
            "batches": self.batches,
            "batch_sum": self.batch_sum,
            "fast": self.fast,
            "general": self.general,
        }

    def add(self, snap: dict[str, Any]) -> None:
        """Add another worker's :meth:`snapshot` to these counters."""
        for route, status, n in snap.get("requests", []):
            key = (str(route), int(status))
            self.requests[key] = self.requests.get(key, 0) + int(n)
        for mine, theirs in ((self.latency, snap["latency"]), (self.batches, snap["batches"])):
            for i, n in enumerate(theirs[: len(mine)]):
                mine[i] += int(n)
        self.latency_sum += float(snap["latency_sum"])
        self.batch_sum += int(snap["batch_sum"])
        self.fast += int(snap["fast"])
        self.general += int(snap["general"])

    def write_snapshot(self, folder: str) -> None:
        """Write this process's counters to ``folder/<pid>.json`` (atomically)."""
        path = Path(folder) / f"{os.getpid()}.json"
        try:
            atomic_write_text(path, json.dumps(self.snapshot()))
        except OSError as exc:  # metrics must never break serving
            logger.debug("could not write metrics snapshot %s: %s", path, exc)

    def combined(self, folder: str | None) -> tuple[Metrics, int]:
        """These counters plus every other worker's last snapshot in ``folder``, and the
        number of workers counted."""
        if not folder:
            return self, 1
        total = Metrics()
        total.add(self.snapshot())
        workers = 1
        mine = f"{os.getpid()}.json"
        for path in Path(folder).glob("*.json"):
            if path.name == mine:
                continue
            try:
                total.add(json.loads(path.read_text(encoding="utf-8")))
                workers += 1
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return total, workers

    def render(self, info: ModelInfo, workers: int = 1) -> str:
        """The Prometheus text exposition."""
        labels = f'model="{info.name or info.uri}",version="{info.version or ""}"'
        out = [
            "# HELP lifecycle_requests_total Requests answered, by route and status.",
            "# TYPE lifecycle_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'lifecycle_requests_total{{route="{route}",status="{status}"}} {n}')
        errors = sum(n for (_r, s), n in self.requests.items() if s >= 400)
        out += [
            "# HELP lifecycle_request_errors_total Requests answered with status >= 400.",
            "# TYPE lifecycle_request_errors_total counter",
            f"lifecycle_request_errors_total {errors}",
            "# HELP lifecycle_predictions_total /invocations answers by path.",
            "# TYPE lifecycle_predictions_total counter",
            f'lifecycle_predictions_total{{path="fast"}} {self.fast}',
            f'lifecycle_predictions_total{{path="general"}} {self.general}',
        ]
        out += _histogram(
            "lifecycle_request_latency_seconds",
            "Latency of /invocations from request parsed to answer written.",
            self.LATENCY_BUCKETS,
            self.latency,
            self.latency_sum,
        )
        out += _histogram(
            "lifecycle_batch_rows",
            "Rows per model call (micro-batches stack concurrent requests).",
            self.BATCH_BUCKETS,
            self.batches,
            float(self.batch_sum),
        )
        out += [
            "# HELP lifecycle_model_info The model version that answers.",
            "# TYPE lifecycle_model_info gauge",
            f"lifecycle_model_info{{{labels}}} 1",
            "# HELP lifecycle_workers Worker processes whose counters these figures add up.",
            "# TYPE lifecycle_workers gauge",
            f"lifecycle_workers {workers}",
        ]
        return "\n".join(out) + "\n"


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def _histogram(
    name: str, help_text: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        out.append(f'{name}_bucket{{le="{bound}"}} {running}')
    running += counts[-1]
    out += [
        f'{name}_bucket{{le="+Inf"}} {running}',
        f"{name}_sum {total}",
        f"{name}_count {running}",
    ]
    return out


# --------------------------------------------------------------------------- HTTP
