"""CPU budget of a batch run against ``mlflow models predict`` (issue #20): the best ratio
any engine could reach on this machine, measured in the same run as MLflow's own tool.

Not a test. Each piece of work a ``lifecycle score`` run cannot skip is measured as CPU
seconds in its own fresh process, on one core:

* ``start``: Python, the toolkit's CLI module and the model loaded (skops + scikit-learn);
* ``parse``: the input cut into the engine's blocks and each parsed by Arrow as the engine
  does (the id kept as text, the features as float64); with Polars installed, also by Polars
  (one thread), and the cheaper of the two counts;
* ``matrix + predict``: the feature matrix built and the estimator's ``predict`` (one thread);
* ``write``: ``id`` + prediction rendered as CSV;
* ``digest``: SHA-256 of the input (the manifest names each input by it);
* ``record``: MLflow imported and the run recorded in an existing SQLite store (every run
  is recorded).

Their sum divided by the machine's cores is a lower bound of the wall time (perfect
parallelism, no coordination); ``mlflow models predict``'s wall time over it is the highest
ratio reachable here. ``lifecycle score`` itself (warm: its verdict cached by a first run) is
timed in the same run for comparison. Usage::

    python -m bench.bench_budget --rows 5000000 10000000 --models logreg rf --workdir /tmp/bb
    # on memory the guest keeps, as on an ordinary machine (root; bench/memory_state.py)
    python -m bench.bench_budget --rows 5000000 10000000 --models logreg rf --workdir /tmp/bb \
        --memory kept --kept-gib 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_batch import make_csv, make_models

ROOT = Path(__file__).resolve().parents[1]

START = """
import json, sys, time
import lifecycle.cli  # noqa: F401  (the command line the run starts from)
from lifecycle.base.lean import load_lean_sklearn
assert load_lean_sklearn(sys.argv[1]) is not None
print(json.dumps({"start": time.process_time()}))
"""

WORK = """
import json, os, sys, time
import numpy as np, pyarrow as pa, pyarrow.csv as pacsv
from batch.readers import DEFAULT_CHUNK_ROWS, InputFile, block_bytes_for, iter_csv_blocks, parse_block, read_columns
from lifecycle.base.lean import load_lean_sklearn
model, path = load_lean_sklearn(sys.argv[1]), sys.argv[2]
est = model.estimator
if hasattr(est, "n_jobs"):
    est.n_jobs = 1
inp = InputFile(path=__import__("pathlib").Path(path), fmt="csv", size=os.path.getsize(path))
names = read_columns(inp)
typed = {n: pa.float64() for n in names if n != "id"}
spent = {"parse (arrow)": 0.0, "matrix + predict": 0.0, "write": 0.0}
polars = None
try:
    import polars
    schema = {n: (polars.String if n == "id" else polars.Float64) for n in names}
    spent["parse (polars)"] = 0.0
except ImportError:
    pass
clock = time.process_time
for block in iter_csv_blocks(inp, 0, names, block_bytes_for(inp.path, DEFAULT_CHUNK_ROWS)):
    if not block.data:
        continue
    t = clock(); table, _, held = parse_block(block, ",", typed); spent["parse (arrow)"] += clock() - t
    assert held
    if polars is not None:
        t = clock(); polars.read_csv(block.data, has_header=False, schema=schema); spent["parse (polars)"] += clock() - t
    t = clock()
    X = np.column_stack([table.column(n).to_numpy() for n in names if n != "id"])
    pred = est.predict(X)
    spent["matrix + predict"] += clock() - t
    t = clock()
    out = pa.table({"id": table.column("id"), "prediction": pa.array(pred)})
    sink = pa.BufferOutputStream(); pacsv.write_csv(out, sink); spent["write"] += clock() - t
print(json.dumps(spent))
"""

DIGEST = """
import hashlib, json, sys, time
h = hashlib.sha256()
with open(sys.argv[1], "rb") as fh:
    while block := fh.read(1 << 20):
        h.update(block)
print(json.dumps({"digest": time.process_time()}))
"""

RECORD = """
import json, sys, time
t = time.process_time()
from mlflow import MlflowClient
from mlflow.entities import Metric
client = MlflowClient(tracking_uri="sqlite:///" + sys.argv[1])
exp = (client.get_experiment_by_name("batch-scoring") or client.get_experiment(client.create_experiment("batch-scoring"))).experiment_id
run = client.create_run(exp)
client.log_batch(run.info.run_id, metrics=[Metric("rows_scored", 1.0, 0, 0)])
client.log_dict(run.info.run_id, {"rows": 1}, "manifest.json")
client.set_terminated(run.info.run_id)
print(json.dumps({"record": time.process_time() - t}))
"""


def _cpu(script: str, *args: str, env: dict[str, str]) -> dict[str, float]:
    """Run ``script`` in a fresh process; its last stdout line is a JSON dict of seconds."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    return {k: float(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def budget(rows: int, model: str, model_dir: Path, data: Path, workdir: Path) -> dict[str, Any]:
    """One size and model: the pieces' CPU seconds, MLflow's wall time, the bound."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POLARS_MAX_THREADS": "1"}
    env.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    pieces: dict[str, float] = {}
    pieces.update(_cpu(START, str(model_dir), env=env))
    pieces.update(_cpu(WORK, str(model_dir), str(data), env=env))
    pieces.update(_cpu(DIGEST, str(data), env=env))
    with tempfile.TemporaryDirectory() as tmp:
        # The first record creates the store's tables (a workspace's store has them already).
        _cpu(RECORD, str(Path(tmp) / "mlflow.db"), env=env)
        pieces.update(_cpu(RECORD, str(Path(tmp) / "mlflow.db"), env=env))
    parse = min(v for k, v in pieces.items() if k.startswith("parse"))
    counted = parse + sum(v for k, v in pieces.items() if not k.startswith("parse"))
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    out = workdir / "out-budget-mlflow.json"
    predict = [mlflow_bin, "models", "predict", "-m", str(model_dir), "-i", str(data),
               "-t", "csv", "-o", str(out), "--env-manager", "local"]  # fmt: skip
    mlflow_s = _wall(predict, env)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        engine = [sys.executable, "-m", "lifecycle", "score", str(model_dir), str(data),
                  "-o", str(workdir / "out-budget-engine.csv"), "--keep-columns", "id"]  # fmt: skip
        engine_env = {**env, "LIFECYCLE_CACHE_DIR": cache}
        _wall(engine, engine_env)  # first run of the model: its verdict is cached
        engine_s = _wall(engine, engine_env)
    for leftover in workdir.glob("out-budget-engine*"):
        leftover.unlink()
    cores = os.cpu_count() or 1
    bound = counted / cores
    return {
        "rows": rows,
        "model": model,
        "cores": cores,
        "cpu_s": {k: round(v, 2) for k, v in pieces.items()},
        "cpu_total_s": round(counted, 2),
        "bound_wall_s": round(bound, 2),
        "mlflow_wall_s": round(mlflow_s, 2),
        "best_ratio": round(mlflow_s / bound, 2),
        "engine_warm_wall_s": round(engine_s, 2),
        "engine_ratio": round(mlflow_s / engine_s, 2),
        "engine_vs_bound": round(bound / engine_s, 2),
        "cores_for_3x": round(counted / (mlflow_s / 3), 1),
    }


def main() -> None:
    """Measure the budget for each size and model; print JSON lines and a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    ap.add_argument("--models", nargs="+", default=["logreg", "rf"], choices=["logreg", "rf"])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-batch")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--memory",
        choices=["as-is", "kept"],
        default="as-is",
        help="kept: free page reporting off for the run (root; see bench/memory_state.py)",
    )
    ap.add_argument("--kept-gib", type=float, default=12.0, help="memory touched once if kept")
    args = ap.parse_args()
    from bench.memory_state import kept_memory, probe

    args.workdir.mkdir(parents=True, exist_ok=True)
    models = make_models(args.workdir)
    for rows in args.rows:
        data = args.workdir / f"in-{rows}.csv"
        if not data.exists():
            make_csv(data, rows)
    results = []
    keep = kept_memory(args.kept_gib) if args.memory == "kept" else contextlib.nullcontext({})
    with keep as kept:
        machine = {**probe(), **kept, "memory": args.memory}
        print(f"# memory: {json.dumps(machine)}", flush=True)
        for rows in args.rows:
            data = args.workdir / f"in-{rows}.csv"
            for model in args.models:
                res = budget(rows, model, models[model], data, args.workdir)
                res["machine"] = machine
                print(json.dumps(res), flush=True)
                results.append(res)
    print(
        "\n| rows | model | CPU pieces (s) | CPU total (s) | bound on "
        f"{results[0]['cores']} cores (s) | `mlflow models predict` (s) | best ratio | "
        "`lifecycle score` warm (s) | its ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        parts = ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items())
        print(
            f"| {r['rows']:,} | {r['model']} | {parts} | {r['cpu_total_s']} | "
            f"{r['bound_wall_s']} | {r['mlflow_wall_s']} | {r['best_ratio']}x | "
            f"{r['engine_warm_wall_s']} | {r['engine_ratio']}x |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
