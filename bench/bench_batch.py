"""Batch scoring benchmark: this engine vs ``mlflow models predict`` vs in-process pandas.

Not a test. For each size and model, in the same run and on the same files:

* ``lifecycle score MODEL in.csv -o out.csv --keep-columns id`` (this engine, default workers),
  twice: ``engine (cold)`` with an empty verdict cache (the lean path is checked against
  ``pyfunc.predict`` during the run) and ``engine (warm)`` reusing the verdict of the first;
* ``mlflow models predict -m MODEL -i in.csv -t csv -o out.json --env-manager local``;
* in process: ``pd.read_csv`` + ``pyfunc.predict`` + ``to_csv`` (one core).

Each runs as its own process; wall time is measured around it and peak memory by polling
the whole process tree (RSS summed over the process and its children; also PSS, which
counts pages shared between processes once). The 1-minute load average is recorded before
each run. Results go to ``bench/results/batch-*.json`` and a Markdown table on stdout.

Usage::

    python -m bench.bench_batch --rows 1000000 5000000 --models logreg rf
    python -m bench.bench_batch --rows 10000000 --models logreg --only engine   # RSS check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 20
ROOT = Path(__file__).resolve().parents[1]

IN_PROCESS = """
import sys, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
df = pd.read_csv(sys.argv[2])
pd.DataFrame({"id": df["id"], "prediction": model.predict(df.drop(columns=["id"]))}).to_csv(
    sys.argv[3], index=False
)
"""


#: The floor (issue #20): the same file read with pyarrow.csv on all cores and the estimator's
#: own predict, in one process, nothing written: what no tool that reads this CSV can beat.
FLOOR = """
import sys, numpy as np, pyarrow.csv as pacsv
from lifecycle.base.lean import load_lean_sklearn
model = load_lean_sklearn(sys.argv[1])
import pyarrow as pa
names = open(sys.argv[2]).readline().strip().split(",")
types = {n: (pa.int64() if n == "id" else pa.float64()) for n in names}  # no type inference
table = pacsv.read_csv(
    sys.argv[2],
    read_options=pacsv.ReadOptions(use_threads=True, block_size=16 << 20),
    convert_options=pacsv.ConvertOptions(column_types=types),
)
X = np.column_stack([table.column(n).to_numpy() for n in table.column_names if n != "id"])
del table
pred = model.estimator.predict(X)
assert len(pred) == len(X)
"""


#: The same floor streamed: Arrow's streaming reader (all cores) and predict per batch; no
#: 3 GB table in memory (faster than the whole-file read on this machine).
FLOOR_STREAMING = """
import sys, numpy as np, pyarrow as pa, pyarrow.csv as pacsv
from lifecycle.base.lean import load_lean_sklearn
model = load_lean_sklearn(sys.argv[1])
names = open(sys.argv[2]).readline().strip().split(",")
types = {n: (pa.int64() if n == "id" else pa.float64()) for n in names}
reader = pacsv.open_csv(
    sys.argv[2],
    read_options=pacsv.ReadOptions(use_threads=True, block_size=4 << 20),
    convert_options=pacsv.ConvertOptions(column_types=types),
)
n = 0
for batch in reader:
    X = np.column_stack([batch.column(i).to_numpy() for i in range(1, batch.num_columns)])
    n += len(model.estimator.predict(X))
assert n > 0
"""


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows of ``id`` + ``f0..f19`` floats, written in blocks (bounded memory)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    names = ["id"] + [f"f{i}" for i in range(N_FEATURES)]
    schema = pa.schema([("id", pa.int64())] + [(n, pa.float64()) for n in names[1:]])
    block = 500_000
    with pacsv.CSVWriter(str(path), schema) as writer:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            x = np.round(rng.normal(size=(n, N_FEATURES)), 6)
            cols = [pa.array(np.arange(start, start + n))] + [
                pa.array(x[:, i]) for i in range(N_FEATURES)
            ]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))


def make_models(folder: Path) -> dict[str, Path]:
    """LogisticRegression and a 50-tree random forest on 20 floats, saved with a signature."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        rng.normal(size=(20_000, N_FEATURES)), columns=[f"f{i}" for i in range(N_FEATURES)]
    )
    y = (X["f0"] + 0.5 * X["f1"] - X["f2"] > 0).astype(int)
    out = {}
    for name, est in (
        ("logreg", LogisticRegression(max_iter=500)),
        ("rf", RandomForestClassifier(n_estimators=50, max_depth=10, random_state=0, n_jobs=1)),
    ):
        est.fit(X, y)
        path = folder / name
        shutil.rmtree(path, ignore_errors=True)
        mlflow.sklearn.save_model(
            est,
            str(path),
            signature=infer_signature(X.head(100), est.predict(X.head(100))),
            pip_requirements=["scikit-learn", "pandas"],
            skops_trusted_types=["sklearn.tree._tree.Tree"] if name == "rf" else None,
        )
        out[name] = path
    return out


def measure(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall seconds and peak RSS/PSS (MB) of its process tree."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = {"rss": 0, "pss": 0}
    stop = threading.Event()

    def poll() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            rss = pss = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    mem = p.memory_full_info()
                    rss += mem.rss
                    pss += getattr(mem, "pss", mem.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            stop.wait(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": peak["rss"] >> 20,
        "peak_pss_mb": peak["pss"] >> 20,
    }


def run(
    rows_list: list[int],
    models: list[str],
    only: list[str],
    workdir: Path,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Run every (size, model, tool) once; return the result rows."""
    py = sys.executable
    mlflow_bin = str(Path(py).parent / "mlflow")
    env = {**os.environ, "PATH": f"{Path(py).parent}:{os.environ.get('PATH', '')}"}
    env["PYTHONPATH"] = str(ROOT)
    model_dirs = make_models(workdir)
    cache = Path(tempfile.mkdtemp(prefix="bench-batch-cache-"))
    results = []
    for rows in rows_list:
        data = workdir / f"in-{rows}.csv"
        if not data.exists():
            t = time.perf_counter()
            make_csv(data, rows)
            print(
                f"# generated {data.name} ({data.stat().st_size >> 20} MB) in {time.perf_counter() - t:.0f} s",
                flush=True,
            )
        for model in models:
            mdir = str(model_dirs[model])
            engine = [
                py,
                "-m",
                "lifecycle",
                "score",
                mdir,
                str(data),
                "-o",
                str(workdir / "out-engine.csv"),
                "--keep-columns",
                "id",
                *(["--workers", str(workers)] if workers else []),
            ]
            tools = {
                "engine (cold)": engine,
                "engine (warm)": engine,
                "mlflow models predict": [mlflow_bin, "models", "predict", "-m", mdir, "-i", str(data), "-t", "csv", "-o", str(workdir / "out-mlflow.json"), "--env-manager", "local"],
                "in-process pandas": [py, "-c", IN_PROCESS, mdir, str(data), str(workdir / "out-pandas.csv")],
                "floor (pyarrow.csv + estimator.predict)": [py, "-c", FLOOR, mdir, str(data)],
                "floor streamed (pyarrow.csv batches + estimator.predict)": [py, "-c", FLOOR_STREAMING, mdir, str(data)],
            }  # fmt: skip
            for tool, cmd in tools.items():
                if only and not any(tool.startswith(o) for o in only):
                    continue
                if tool == "engine (cold)":
                    shutil.rmtree(cache, ignore_errors=True)
                load = round(os.getloadavg()[0], 2)
                res = measure(cmd, workdir, {**env, "LIFECYCLE_CACHE_DIR": str(cache)})
                label = (
                    f"{tool} workers={workers}" if tool.startswith("engine") and workers else tool
                )
                res.update(
                    rows=rows,
                    model=model,
                    tool=label,
                    rows_per_s=round(rows / res["wall_s"]),
                    load_avg_1m=load,
                )
                print(json.dumps(res), flush=True)
                results.append(res)
                for out in workdir.glob("out-*"):
                    out.unlink()
    return results


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table with ratios against mlflow models predict and the in-process baseline."""
    lines = [
        "| rows | model | tool | load avg | wall s | rows/s | peak RSS MB (sum) | peak PSS MB | speed vs mlflow predict | speed vs in-process | RSS vs mlflow predict | throughput vs floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_key = {(r["rows"], r["model"], r["tool"]): r for r in results}
    for r in results:
        ref = by_key.get((r["rows"], r["model"], "mlflow models predict"))
        base = by_key.get((r["rows"], r["model"], "in-process pandas"))
        floors = [
            f["wall_s"]
            for f in results
            if f["rows"] == r["rows"] and f["model"] == r["model"] and f["tool"].startswith("floor")
        ]
        # Against the faster of the two floors.
        of_floor = f"{min(floors) / r['wall_s']:.0%}" if floors else "-"
        speed_ref = f"{ref['wall_s'] / r['wall_s']:.2f}x" if ref else "-"
        speed_base = f"{base['wall_s'] / r['wall_s']:.2f}x" if base else "-"
        rss_ref = (
            f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}" if ref and ref["peak_rss_mb"] else "-"
        )
        lines.append(
            f"| {r['rows']:,} | {r['model']} | {r['tool']} | {r.get('load_avg_1m', '-')} | "
            f"{r['wall_s']} | {r['rows_per_s']:,} | "
            f"{r['peak_rss_mb']} | {r['peak_pss_mb']} | {speed_ref} | {speed_base} | {rss_ref} | "
            f"{of_floor} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--models", nargs="+", default=["logreg", "rf"], choices=["logreg", "rf"])
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="tools to run (prefixes: engine, mlflow, in-process, floor)",
    )
    parser.add_argument(
        "--workdir", default=None, help="where data and models go (default: a temp dir)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="engine --workers (default: all cores)"
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = run(args.rows, args.models, args.only, workdir, args.workers)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"batch-{stamp}.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
