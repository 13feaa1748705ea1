"""Benchmark: Open Inference Protocol (V2) ``infer`` against MLflow's ``dataframe_split``
payload on the same ``lifecycle serve`` process, same run (issue #19).

The model is bench_serve's: a scikit-learn ``LogisticRegression`` on 20 float features,
registered in a throw-away SQLite workspace and served from ``models:/bench_lr/1`` (fast
path). wrk sends one-row requests with keep-alive, alternating between the two payloads
for ``--rounds`` rounds at 1 and 16 connections: MLflow's ``dataframe_split`` to
``/invocations``, and V2's one named ``FP64`` tensor per column to
``/v2/models/bench_lr/versions/1/infer``. Both answers are checked to carry the same
prediction first. The target: V2 throughput within 20% of the MLflow payload's (ratio
≥ 0.8). Ratios are what to read: the machine is shared.

Usage::

    python -m bench.bench_v2 [--duration 10] [--rounds 3] [--json out.json]

Needs ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

from bench.bench_serve import BODY, COLUMNS, ROW, Proc, build_model, free_port, run_wrk

V2_PATH = "/v2/models/bench_lr/versions/1/infer"
V2_BODY = json.dumps(
    {
        "inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
            for c, v in zip(COLUMNS, ROW, strict=True)
        ]
    }
)


def _lua(root: Path, name: str, body: str) -> Path:
    script = root / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{body}'\n",
        encoding="utf-8",
    )
    return script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-v2-"))
    build_model(root)
    os.environ["LIFECYCLE_CACHE_DIR"] = str(root / "cache")
    scripts = {"mlflow": _lua(root, "mlflow", BODY), "v2": _lua(root, "v2", V2_BODY)}
    paths = {"mlflow": "/invocations", "v2": V2_PATH}
    port = free_port()
    cmd = [sys.executable, "-m", "lifecycle", "serve", "models:/bench_lr/1", "-w", "dev"]
    cmd += ["--port", str(port), "--workers", "1", "--no-record"]
    server = Proc(
        "lifecycle serve", cmd, f"http://127.0.0.1:{port}", "/health", root, root / "s.log"
    )
    try:
        headers = {"Content-Type": "application/json"}
        a = requests.post(server.url + paths["mlflow"], data=BODY, headers=headers, timeout=30)
        b = requests.post(server.url + V2_PATH, data=V2_BODY, headers=headers, timeout=30)
        a.raise_for_status()
        b.raise_for_status()
        label = a.json()["predictions"][0]
        v2 = b.json()["outputs"][0]["data"][0]
        if label != v2:
            raise SystemExit(f"answers differ: MLflow payload {a.text!r} vs V2 {b.text!r}")
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {"mlflow": {}, "v2": {}}
        for _ in range(args.rounds):
            for conns in (1, 16):
                for key in ("mlflow", "v2"):
                    url = server.url + paths[key]
                    run_wrk(url, conns, 2, scripts[key], path="")  # warm-up
                    before = group_cpu_seconds(server.proc.pid)
                    res = run_wrk(url, conns, args.duration, scripts[key], path="")
                    spent = group_cpu_seconds(server.proc.pid) - before
                    res["server_cpu_us_per_request"] = spent / max(res["requests"], 1) * 1e6
                    if res["non_2xx"] or res["socket_errors"]:
                        raise SystemExit(f"{key} at {conns} connections had errors: {res}")
                    runs[key].setdefault(conns, []).append(res)
    finally:
        server.stop()
    report = summarize(runs, args)
    print(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(runs, indent=2), encoding="utf-8")
    shutil.rmtree(root, ignore_errors=True)
    return 0


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every process in the process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


def summarize(runs: dict[str, dict[int, list[dict[str, Any]]]], args: argparse.Namespace) -> str:
    """A markdown table: req/s and p50 of each payload per round, and the ratios."""
    lines = [
        f"one lifecycle serve (1 worker, fast path), {args.rounds} alternating rounds of "
        f"{args.duration}s, one-row requests",
        "",
        "| connections | MLflow payload req/s | V2 req/s | V2 / MLflow | p50 MLflow / V2 (ms) "
        "| server CPU µs per request, MLflow / V2 (ratio) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for conns in (1, 16):
        m = [r["rps"] for r in runs["mlflow"][conns]]
        v = [r["rps"] for r in runs["v2"][conns]]
        ratios = [b / a for a, b in zip(m, v, strict=True)]
        p50 = [
            f"{a['p50_ms']:.2f} / {b['p50_ms']:.2f}"
            for a, b in zip(runs["mlflow"][conns], runs["v2"][conns], strict=True)
        ]
        cm = [r["server_cpu_us_per_request"] for r in runs["mlflow"][conns]]
        cv = [r["server_cpu_us_per_request"] for r in runs["v2"][conns]]
        cpu = statistics.median(a / b for a, b in zip(cm, cv, strict=True))
        lines.append(
            f"| {conns} | {', '.join(f'{x:.0f}' for x in m)} | {', '.join(f'{x:.0f}' for x in v)}"
            f" | {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})"
            f" | {'; '.join(p50)} | {statistics.median(cm):.1f} / {statistics.median(cv):.1f}"
            f" ({cpu:.2f}) |"
        )
    lines.append("")
    for conns in (1, 16):
        ratio = statistics.median(
            b["rps"] / a["rps"]
            for a, b in zip(runs["mlflow"][conns], runs["v2"][conns], strict=True)
        )
        lines.append(
            f"V2 one-row throughput at {conns} connection(s): {ratio:.2f}x the MLflow payload's "
            f"(target >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
