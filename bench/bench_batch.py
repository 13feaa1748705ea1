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
    # issue #20: three rounds in each memory state (kept: root, see bench/memory_state.py)
    python -m bench.bench_batch --rows 5000000 10000000 --models logreg rf \
        --only engine mlflow --rounds 3 --memory as-is kept --kept-gib 8
    python -m bench.bench_batch --summarize bench/results/batch-20261203T233612.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
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


def _tools(
    py: str, mdir: str, data: Path, workdir: Path, workers: int | None
) -> dict[str, list[str]]:
    """The command line of each tool for one model and input."""
    mlflow_bin = str(Path(py).parent / "mlflow")
    engine = [py, "-m", "lifecycle", "score", mdir, str(data), "-o", str(workdir / "out-engine.csv"),
              "--keep-columns", "id", *(["--workers", str(workers)] if workers else [])]  # fmt: skip
    return {
        "engine (cold)": engine,
        "engine (warm)": engine,
        "mlflow models predict": [mlflow_bin, "models", "predict", "-m", mdir, "-i", str(data), "-t", "csv", "-o", str(workdir / "out-mlflow.json"), "--env-manager", "local"],
        "in-process pandas": [py, "-c", IN_PROCESS, mdir, str(data), str(workdir / "out-pandas.csv")],
        "floor (pyarrow.csv + estimator.predict)": [py, "-c", FLOOR, mdir, str(data)],
        "floor streamed (pyarrow.csv batches + estimator.predict)": [py, "-c", FLOOR_STREAMING, mdir, str(data)],
    }  # fmt: skip


def _order(tools: list[str], round_no: int) -> list[str]:
    """Odd rounds run MLflow's tool before ours, even rounds after (no tool always goes
    first); the engine's cold run always precedes its warm run (it fills the cache)."""
    if round_no % 2 == 0:
        return tools
    first = [t for t in tools if not t.startswith("engine")]
    return first + [t for t in tools if t.startswith("engine")]


def run(
    rows_list: list[int],
    models: list[str],
    only: list[str],
    workdir: Path,
    workers: int | None = None,
    rounds: int = 1,
    memory: list[str] | None = None,
    kept_gib: float = 12.0,
) -> list[dict[str, Any]]:
    """Run every (size, model, tool) ``rounds`` times in each memory state; the result rows.

    Rounds interleave the memory states (as-is, kept, as-is, ...) so a drift of the machine
    over the hour touches both alike. In every state each tool starts after the machine has
    had time to hand freed memory back (``memory_state.SETTLE_S``), so no tool reuses what
    the previous one freed.
    """
    from bench.memory_state import SETTLE_S, kept_memory, probe

    py = sys.executable
    env = {**os.environ, "PATH": f"{Path(py).parent}:{os.environ.get('PATH', '')}"}
    env["PYTHONPATH"] = str(ROOT)
    model_dirs = make_models(workdir)
    cache = Path(tempfile.mkdtemp(prefix="bench-batch-cache-"))
    for rows in rows_list:
        data = workdir / f"in-{rows}.csv"
        if not data.exists():
            t = time.perf_counter()
            make_csv(data, rows)
            print(
                f"# generated {data.name} ({data.stat().st_size >> 20} MB) in {time.perf_counter() - t:.0f} s",
                flush=True,
            )
    results = []
    for round_no in range(rounds):
        for state in memory or ["as-is"]:
            keep = kept_memory(kept_gib) if state == "kept" else contextlib.nullcontext({})
            with keep as kept:
                machine = {**probe(), **kept}
                print(f"# round {round_no + 1}, memory {state}: {json.dumps(machine)}", flush=True)
                for rows in rows_list:
                    data = workdir / f"in-{rows}.csv"
                    for model in models:
                        tools = _tools(py, str(model_dirs[model]), data, workdir, workers)
                        names = [t for t in tools if not only or any(t.startswith(o) for o in only)]
                        for tool in _order(names, round_no):
                            if tool == "engine (cold)":
                                shutil.rmtree(cache, ignore_errors=True)
                            time.sleep(SETTLE_S)
                            load = round(os.getloadavg()[0], 2)
                            res = measure(
                                tools[tool], workdir, {**env, "LIFECYCLE_CACHE_DIR": str(cache)}
                            )
                            label = (
                                f"{tool} workers={workers}"
                                if tool.startswith("engine") and workers
                                else tool
                            )
                            res.update(rows=rows, model=model, tool=label,
                                       rows_per_s=round(rows / res["wall_s"]), load_avg_1m=load,
                                       round=round_no + 1, memory=state,
                                       touch_s_per_gib=machine["touch_s_per_gib"])  # fmt: skip
                            print(json.dumps(res), flush=True)
                            results.append(res)
                            for out in workdir.glob("out-*"):
                                out.unlink()
    return results


def summary(results: list[dict[str, Any]]) -> str:
    """Medians over rounds per memory state: wall time (min-max), ratios of the medians
    against ``mlflow models predict`` and the range of the per-round (paired) ratios."""
    lines = [
        "| memory | rows | model | tool | rounds | wall s median (min-max) | peak RSS MB median | speed vs mlflow predict (medians) | per-round ratios min-max | RSS vs mlflow predict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r.get("memory", "as-is"), r["rows"], r["model"], r["tool"]), []).append(
            r
        )
    for (state, rows, model, tool), runs in groups.items():
        ref = groups.get((state, rows, model, "mlflow models predict"), [])
        wall = statistics.median(r["wall_s"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        line = f"| {state} | {rows:,} | {model} | {tool} | {len(runs)} | {wall:.2f} ({min(r['wall_s'] for r in runs)}-{max(r['wall_s'] for r in runs)}) | {rss:.0f} |"
        if ref:
            ref_wall = statistics.median(r["wall_s"] for r in ref)
            ref_rss = statistics.median(r["peak_rss_mb"] for r in ref)
            by_round = {r.get("round"): r["wall_s"] for r in ref}
            paired = [
                by_round[r.get("round")] / r["wall_s"] for r in runs if r.get("round") in by_round
            ]
            spread = f"{min(paired):.2f}x-{max(paired):.2f}x" if paired else "-"
            line += f" {ref_wall / wall:.2f}x | {spread} | {rss / ref_rss:.2f} |"
        else:
            line += " - | - | - |"
        lines.append(line)
    return "\n".join(lines)


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
    parser.add_argument("--rounds", type=int, default=1, help="times each tool runs per state")
    parser.add_argument(
        "--memory",
        nargs="+",
        default=["as-is"],
        choices=["as-is", "kept"],
        help="memory states to measure in (kept: free page reporting off, root; see "
        "bench/memory_state.py)",
    )
    parser.add_argument(
        "--kept-gib", type=float, default=12.0, help="memory touched once for the kept state"
    )
    parser.add_argument(
        "--summarize", default=None, help="print the summary of an earlier result file and exit"
    )
    args = parser.parse_args()
    if args.summarize:
        print(summary(json.loads(Path(args.summarize).read_text())))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = run(
        args.rows,
        args.models,
        args.only,
        workdir,
        args.workers,
        rounds=args.rounds,
        memory=args.memory,
        kept_gib=args.kept_gib,
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"batch-{stamp}.json").write_text(json.dumps(results, indent=2))
    print(table(results) if args.rounds == 1 and len(args.memory) == 1 else summary(results))


if __name__ == "__main__":
    main()
