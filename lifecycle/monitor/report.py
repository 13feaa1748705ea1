"""The monitoring report: one static HTML page with PNG figures, readable with no server.

Figures (matplotlib, Agg backend): PSI per feature (drifted ones in red, the threshold as a
line), baseline-vs-current distributions of the drifted features and of the predictions,
and the trend of this version's monitor runs (metrics, largest PSI, drifted features).
The page refers to the figures by relative file names, so the folder can be copied or
opened from disk (``file://``). Files are written under temporary names and renamed.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.monitor.drift import Thresholds
from lifecycle.monitor.profile import OTHER

if TYPE_CHECKING:
    from lifecycle.monitor.result import MonitorResult

logger = logging.getLogger(__name__)

REPORT_FILE = "index.html"
MAX_DISTRIBUTION_PLOTS = 12
_DRIFT_COLOR = "#c0392b"
_OK_COLOR = "#2e86c1"
_BASE_COLOR = "#7f8c8d"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:60] or "feature"


def _psi_figure(
    path: Path, features: list[dict[str, Any]], prediction: dict[str, Any], t: Thresholds
) -> None:
    plt = _plt()
    rows = [*features, prediction]
    names = [str(f["name"]) for f in rows]
    values = [float(f.get("psi") or 0.0) for f in rows]
    colors = [_DRIFT_COLOR if f.get("drift") else _OK_COLOR for f in rows]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(rows) + 1)))
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)), labels=names)
    ax.invert_yaxis()
    ax.axvline(t.psi, color="black", linestyle="--", linewidth=1, label=f"PSI threshold {t.psi}")
    ax.set_xlabel("population stability index (PSI)")
    ax.set_title("Drift per feature (red: drifted)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _distribution_figure(path: Path, stat: dict[str, Any]) -> None:
    import numpy as np

    plt = _plt()
    bins = dict(stat["bins"])
    if (
        bins["labels"]
        and bins["labels"][-1] == OTHER
        and not (bins["baseline"][-1] or bins["current"][-1])
    ):
        bins = {k: list(v)[:-1] for k, v in bins.items()}  # an empty "other" bucket: no bar
    labels = [str(b) for b in bins["labels"]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(x - 0.2, bins["baseline"], width=0.4, color=_BASE_COLOR, label="baseline")
    ax.bar(
        x + 0.2,
        bins["current"],
        width=0.4,
        color=_DRIFT_COLOR if stat.get("drift") else _OK_COLOR,
        label="current",
    )
    ax.set_xticks(x, labels=labels, rotation=30 if len(labels) > 4 else 0, ha="right", fontsize=8)
    ax.set_ylabel("fraction of rows")
    psi_value = stat.get("psi")
    title = f"{stat['name']} ({stat['kind']})"
    if psi_value is not None:
        title += f": PSI {psi_value:.3f}"
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _trend_figure(path: Path, history: list[dict[str, Any]]) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    x = list(range(1, len(history) + 1))
    metric_keys = sorted(
        {
            k
            for h in history
            for k in h["metrics"]
            if k.startswith("metric.") and k != "metric.labelled_rows"
        }
    )
    for key in metric_keys:
        ys = [h["metrics"].get(key) for h in history]
        ax1.plot(
            x,
            [float("nan") if y is None else y for y in ys],
            marker="o",
            label=key[len("metric.") :],
        )
    if not metric_keys:
        ax1.text(
            0.5,
            0.5,
            "no labelled runs yet (pass --labels)",
            ha="center",
            va="center",
            transform=ax1.transAxes,
        )
    else:
        ax1.legend(fontsize=8)
    ax1.set_ylabel("metric on new data")
    ax1.set_title("This version's monitor runs")
    ax2.plot(
        x,
        [h["metrics"].get("max_psi", float("nan")) for h in history],
        marker="o",
        color=_DRIFT_COLOR,
        label="largest PSI",
    )
    ax2.plot(
        x,
        [h["metrics"].get("prediction_psi", float("nan")) for h in history],
        marker="s",
        color=_BASE_COLOR,
        label="prediction PSI",
    )
    ax2b = ax2.twinx()
    ax2b.bar(
        x, [h["metrics"].get("drifted_features", 0.0) for h in history], alpha=0.25, color=_OK_COLOR
    )
    ax2b.set_ylabel("drifted features")
    ax2.set_ylabel("PSI")
    ax2.set_xlabel("monitor run (oldest first)")
    ax2.set_xticks(x)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return (
            f"{value:.3g}"
            if abs(value) < 1e-3 and value != 0
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return html.escape(str(value))


def write_report(
    result: MonitorResult,
    baseline: dict[str, Any],
    history: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    thresholds: Thresholds | None = None,
) -> Path:
    """Write ``index.html`` and its PNG figures into ``out_dir``; return the page's path.

    Args:
        result: the monitoring result (features carry their bins).
        baseline: the baseline profile compared against.
        history: this version's monitor runs, oldest first (for the trend figure).
        out_dir: the report folder (created if missing; files already there are replaced).
        thresholds: the thresholds in force (for the PSI line).
    """
    t = thresholds or Thresholds()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        images: list[tuple[str, str]] = []
        _psi_figure(tmp / "drift_psi.png", result.features, result.prediction, t)
        images.append(("drift_psi.png", "PSI per feature"))
        plotted = [f for f in result.features if f.get("drift") and f.get("bins")]
        if result.prediction.get("bins"):
            plotted.append(result.prediction)
        for i, stat in enumerate(plotted[: MAX_DISTRIBUTION_PLOTS + 1]):
            fname = f"dist_{i:02d}_{_slug(str(stat['name']))}.png"
            _distribution_figure(tmp / fname, stat)
            images.append((fname, f"Baseline vs current: {stat['name']}"))
        if history:
            _trend_figure(tmp / "trend.png", list(history))
            images.append(("trend.png", "Trend across monitor runs"))
        (tmp / REPORT_FILE).write_text(
            _page(result, baseline, images, len(history)), encoding="utf-8"
        )
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote the monitoring report %s", out / REPORT_FILE)
    return (out / REPORT_FILE).resolve()


def _page(
    result: MonitorResult, baseline: dict[str, Any], images: list[tuple[str, str]], runs: int
) -> str:
    e = html.escape
    verdict = "DRIFT" if result.drift else "no drift"
    color = _DRIFT_COLOR if result.drift else "#27ae60"
    reasons = (
        "".join(f"<li>{e(r)}</li>" for r in result.reasons) or "<li>all within thresholds</li>"
    )
    feature_rows = "".join(
        "<tr{cls}><td>{name}</td><td>{kind}</td><td>{psi}</td><td>{ks}</td><td>{chi}</td>"
        "<td>{miss}</td><td>{bmiss}</td><td>{drift}</td><td>{why}</td></tr>".format(
            cls=' class="drift"' if f.get("drift") else "",
            name=e(str(f["name"])),
            kind=e(str(f.get("kind"))),
            psi=_fmt(f.get("psi")),
            ks=_fmt(f.get("ks_pvalue")),
            chi=_fmt(f.get("chi2_pvalue")),
            miss=_fmt(f.get("missing_rate")),
            bmiss=_fmt(f.get("baseline_missing_rate")),
            drift=_fmt(bool(f.get("drift"))),
            why=e("; ".join(f.get("reasons") or [])),
        )
        for f in [*result.features, result.prediction]
    )
    metric_rows = (
        "".join(
            f"<tr><td>{e(k)}</td><td>{_fmt(result.baseline_metrics.get(k))}</td><td>{_fmt(v)}</td>"
            f"<td>{_fmt(result.metric_changes.get(k))}</td></tr>"
            for k, v in result.metrics.items()
        )
        or '<tr><td colspan="4">no labels given</td></tr>'
    )
    action_rows = (
        "".join(
            f"<tr><td>{e(str(a.get('action')))}</td><td>{e(str(a.get('status')))}</td>"
            f"<td>{e(', '.join(f'{k}={v}' for k, v in a.items() if k not in ('action', 'status')))}</td></tr>"
            for a in result.actions
        )
        or '<tr><td colspan="3">none</td></tr>'
    )
    figures = "".join(
        f'<figure><img src="{e(src)}" alt="{e(alt)}"><figcaption>{e(alt)}</figcaption></figure>'
        for src, alt in images
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Monitoring: {e(result.model)} v{e(result.version)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; background: #fff; }}
h1 {{ font-size: 1.5em; }}
.verdict {{ display: inline-block; padding: .3em .8em; color: #fff; background: {color}; border-radius: 4px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; font-size: .9em; }}
tr.drift td {{ background: #fdecea; }}
figure {{ margin: 1em 0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
</style>
</head>
<body>
<h1>Monitoring report: {e(result.model)} version {e(result.version)}</h1>
<p><span class="verdict">{verdict}</span></p>
<p>Workspace <b>{e(result.workspace)}</b>, model URI <code>{e(result.model_uri)}</code>,
{result.rows} new rows compared with a baseline of {baseline.get("rows", "?")} rows
(created {e(str(baseline.get("created_at", "?")))}). Monitor run <code>{e(str(result.run_id))}</code>;
{runs} monitor run(s) of this version so far. Policy: {e(str(result.policy.get("source", "default")))}.</p>
<h2>Why</h2>
<ul>{reasons}</ul>
<h2>Actions</h2>
<table><tr><th>action</th><th>status</th><th>details</th></tr>{action_rows}</table>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>baseline</th><th>new data</th><th>change</th></tr>{metric_rows}</table>
<h2>Features</h2>
<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>KS p</th><th>chi² p</th><th>missing</th>
<th>baseline missing</th><th>drift</th><th>reasons</th></tr>{feature_rows}</table>
<h2>Figures</h2>
{figures}
</body>
</html>
"""
