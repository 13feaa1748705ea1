"""Benchmark: the Spark engine on a real standalone cluster against Spark local mode, same
input, same run (issue #23).

A scikit-learn ``LogisticRegression`` on 20 float features; 600k rows in three CSV files
with a few bad rows (a value that does not convert, a malformed record). Each engine scores
them with the real ``lifecycle score`` CLI:

- ``cluster``: a standalone master and one worker with one core, started with pyspark's
  ``spark-class`` on 127.0.0.1 (the worker in its own mount namespace where the driver's temp
  folder is empty, when ``unshare`` allows it, as in the cluster test);
- ``local[2]``: Spark local mode on both cores;
- ``local``: the toolkit's local engine, for reference.

Then the same files with one row the model refuses (a missing value LogisticRegression
rejects) in each file: the extra time is the overhead of a model error. Targets: cluster and
``local[2]`` within 1.5× of each other; a model error costs ≤ 2 s per file.

Usage::

    python -m bench.bench_spark [--rows 600000] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FEATURES = [f"x{i}" for i in range(20)]


def build_model(path: Path) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 20)), columns=FEATURES)
    y = (X.sum(axis=1) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)))
    return path


def write_inputs(folder: Path, rows: int, model_error: bool) -> list[Path]:
    """Three CSV files of rows/3 rows each with one coercion reject and one malformed
    record; with ``model_error``, one row per file with a missing feature (model refuses)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    per = rows // 3
    for i in range(3):
        rng = np.random.default_rng(10 + i)
        df = pd.DataFrame(rng.normal(size=(per, 20)).round(6), columns=FEATURES)
        df.insert(0, "id", np.arange(per) + i * per)
        df = df.astype({"x0": object})
        df.loc[per // 3, "x0"] = "bad"
        if model_error:
            df.loc[per // 2, "x1"] = np.nan
        text = df.to_csv(index=False).splitlines(keepends=True)
        text.insert(per // 4, "1,2,3\n")
        path = folder / f"part{i}.csv"
        path.write_text("".join(text), encoding="utf-8")
        paths.append(path)
    return paths


def run_score(
    model: Path, inputs: list[Path], out: Path, engine: list[str], env: dict[str, str]
) -> tuple[float, dict[str, Any]]:
    cmd = [sys.executable, "-m", "lifecycle", "score", str(model), *[p.as_uri() if "spark" in engine else str(p) for p in inputs],
           "-o", str(out), "--keep-columns", "id", "--max-error-rate", "0.01", "--json", *engine]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(engine)} failed: {proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from tests.support.spark_cluster import hiding_supported, start_cluster

    root = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    hidden = root / "driver-tmp"
    hidden.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(hidden),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
        "LIFECYCLE_HOME": str(root / "home"),
    }
    model = build_model(hidden / "model")
    clean = write_inputs(root / "clean", args.rows, model_error=False)
    faulty = write_inputs(root / "faulty", args.rows, model_error=True)
    why = hiding_supported()
    cluster = start_cluster(root / "cluster", hidden if why is None else root / "unused")
    results: dict[str, dict[str, list[float]]] = {}
    try:
        engines = {
            "cluster": ["--engine", "spark", "--master", cluster.master_url],
            "local[2]": ["--engine", "spark", "--master", "local[2]"],
            "local": ["--engine", "local"],
        }
        for _round in range(args.rounds):
            for name, flags in engines.items():
                for kind, inputs in (("clean", clean), ("model_error", faulty)):
                    out = root / f"{name}-{kind}.csv"
                    seconds, manifest = run_score(model, inputs, out, flags, env)
                    results.setdefault(name, {}).setdefault(kind, []).append(seconds)
                    print(
                        f"{name:9s} {kind:12s} {seconds:6.1f} s  rows {manifest['rows_read']:,}"
                        f"  rejected {manifest['rows_rejected']}",
                        flush=True,
                    )
                    out.unlink()
    finally:
        cluster.stop()
    med = {n: {k: statistics.median(v) for k, v in kinds.items()} for n, kinds in results.items()}
    summary = {
        "rows": args.rows,
        "files": 3,
        "worker_hidden_from_driver_temp": why is None,
        "seconds": med,
        "cluster_over_local2": med["cluster"]["clean"] / med["local[2]"]["clean"],
        "model_error_overhead_per_file_s": {
            n: (v["model_error"] - v["clean"]) / 3 for n, v in med.items()
        },
        "local_engine_over_local2": med["local"]["clean"] / med["local[2]"]["clean"],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
