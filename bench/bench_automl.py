"""Benchmark: a real AutoML model run through its own environment, against MLflow's own tools
run inside that same environment, on the same model, same run.

The model is the committed real AutoML fixture ``classification_lightgbm`` (LightGBM behind
AutoML's DataTransformer, made by AutoML's own classes). Ours: imported with
``lifecycle import automl`` into a throw-away workspace and run by ``lifecycle serve`` /
``lifecycle score``, whose worker runs in AutoML's environment (``lifecycle env prepare``).
MLflow's: ``mlflow models serve`` / ``mlflow models predict --env-manager local`` started with
the interpreter of a copy of that environment (mlflow-skinny 2.22.5, uvicorn; FastAPI pinned
to 0.115.12, see :func:`peer_spec`) on AutoML's own ``outputs/mlflow-model/``; AutoML's one Python 3.11 fix is applied to it the same way the
toolkit's loader applies it (a ``sitecustomize`` on ``PYTHONPATH``, no installed file edited).

Serving: one-row ``dataframe_split`` requests from wrk at 1 and 16 connections, one worker
each; both servers first checked to give the same predictions. Batch: ``N`` rows (default
1,000,000) made by repeating the fixture's hold-out rows, scored by both into CSV, wall time
and the peak of the summed resident memory of each whole process tree (the toolkit's
workers and their model workers included; sampled every 50 ms from /proc), outputs compared
row by row. The floor of both batch targets is measured too: a fresh process of that
environment imports AutoML's runtime and loads the model (wall, CPU, peak RSS so far), then
predicts the rows (CPU); the best speed-up any tool could reach here is MLflow's time over
that load plus the prediction's CPU spread over all cores.

Usage::

    python -m bench.bench_automl [--rows 1000000] [--duration 10] [--json out.json]

Needs ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from bench.bench_serve import Proc, free_port, run_wrk

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "fixtures" / "real" / "automl" / "classification_lightgbm"
SHIM = (
    "import sys\n"
    "if sys.version_info[:2] == (3, 11):\n"
    "    from azureml.automl.core.onnx_convert.onnx_convert_constants import "
    "OnnxConvertConstants\n"
    "    OnnxConvertConstants.OnnxIncompatiblePythonVersion = (3, 12)\n"
)

#: The model loaded in AutoML's environment (the least time and memory any tool running this
#: model spends before its first row), then the rows predicted (CPU on all threads; reading
#: the CSV not counted): the floor of issue #14's batch targets.
LOAD_FLOOR = """
import json, resource, sys, time
t0 = time.perf_counter()
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
loaded = {
    "wall_s": round(time.perf_counter() - t0, 2),
    "cpu_s": round(time.process_time(), 2),
    "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}
import pandas as pd
frame = pd.read_csv(sys.argv[2])
c0 = time.process_time()
model.predict(frame)
loaded["predict_cpu_s"] = round(time.process_time() - c0, 2)
print(json.dumps(loaded))
"""


def _tree_rss_kb(root: int) -> int:
    """Sum of the resident memory (kB) of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        parents[pid] = int(fields.get("PPid", "0").strip())
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak MB of the summed resident memory of the whole process tree,
    sampled every 50 ms) of ``cmd``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.05)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed with status {proc.returncode}")
    return wall, peak / 1024


def peer_spec() -> Any:
    """AutoML's environment plus the FastAPI that MLflow 2.22's scoring server was written
    for: the lock's FastAPI 0.165 (Starlette 1.x) no longer has the ``app.route`` that
    ``mlflow models serve`` of mlflow-skinny 2.22.5 calls, so it cannot start there at all."""
    import dataclasses

    from lifecycle.base.envs import automl_spec

    spec = automl_spec()
    return dataclasses.replace(
        spec, name=spec.name + "-mlflow-serve", steps=(*spec.steps, ("fastapi==0.115.12",))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    from lifecycle.base.envs import automl_spec, prepare_env

    prepare_env(automl_spec(), log=print)
    env_dir = prepare_env(peer_spec(), log=print)
    env_python = str(env_dir / "bin" / "python")
    lifecycle = str(Path(sys.executable).parent / "lifecycle")
    results: dict[str, Any] = {"model": "classification_lightgbm", "rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="bench-automl-") as tmp_s:
        tmp = Path(tmp_s)
        shim = tmp / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SHIM)
        base_env = {**os.environ, "LIFECYCLE_CACHE_DIR": str(tmp / "cache")}
        peer_env = {
            **os.environ,
            "PYTHONPATH": str(shim),
            "PATH": str(env_dir / "bin") + os.pathsep + os.environ.get("PATH", ""),
        }
        subprocess.run(
            [lifecycle, "import", "automl", str(CASE / "outputs"), "--name", "automl_lgbm",
             "--trust-pickle"], cwd=tmp, env=base_env, check=True, capture_output=True,
        )  # fmt: skip
        peer_model = str(CASE / "outputs" / "mlflow-model")

        # ---- serving
        holdout = pd.read_csv(CASE / "holdout.csv")
        row = json.loads(holdout.head(1).to_json(orient="split", index=False))
        body = json.dumps({"dataframe_split": row})
        script = tmp / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{body}'\n"
        )
        serve: dict[str, Any] = {}
        for key in ("lifecycle", "mlflow"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            if key == "lifecycle":
                cmd = [lifecycle, "serve", "models:/automl_lgbm/1", "--port", str(port)]
                proc = Proc(key, cmd, url, "/health", tmp, tmp / f"{key}.log", base_env)
            else:
                cmd = [env_python, "-m", "mlflow", "models", "serve", "-m", peer_model,
                       "--env-manager", "local", "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
                proc = Proc(key, cmd, url, "/ping", tmp, tmp / f"{key}.log", peer_env)
            try:
                answer = requests.post(
                    url + "/invocations",
                    json={"dataframe_split": json.loads(holdout.to_json(orient="split"))},
                    timeout=120,
                ).json()
                serve[key] = {"ready_s": round(proc.ready_s, 2), "predictions": answer}
                for conns in (1, 16):
                    run_wrk(url, conns, 2, script)  # warm-up
                    serve[key][conns] = run_wrk(url, conns, args.duration, script)
            finally:
                proc.stop()
        # AutoML's own pipeline on the same rows read as the scorer reads a CSV (the
        # fixture's expected.parquet): how many hold-out rows each server answers otherwise.
        # (MLflow's server passes a JSON null as None, which AutoML's text featurizer reads
        # as the word 'None'; the toolkit's AutoML loader passes it as missing, like a CSV.)
        truth = pd.read_parquet(CASE / "expected.parquet")["predict"].tolist()
        for key in ("lifecycle", "mlflow"):
            got = serve[key].pop("predictions")["predictions"]
            serve[key]["rows_unlike_automl"] = sum(a != b for a, b in zip(got, truth, strict=True))
        serve["ratio_16"] = round(serve["lifecycle"][16]["rps"] / serve["mlflow"][16]["rps"], 2)
        serve["ratio_1"] = round(serve["lifecycle"][1]["rps"] / serve["mlflow"][1]["rps"], 2)
        results["serve"] = serve
        print(json.dumps(serve, indent=1))

        # ---- batch
        reps = -(-args.rows // len(holdout))
        big = pd.concat([holdout] * reps, ignore_index=True).head(args.rows)
        data = tmp / "big.csv"
        big.to_csv(data, index=False)
        ours_out, peer_out = tmp / "ours.csv", tmp / "mlflow.json"
        ours_s, ours_mb = _timed(
            [lifecycle, "score", "models:/automl_lgbm/1", str(data), "--output", str(ours_out)],
            base_env,
            tmp,
        )
        peer_s, peer_mb = _timed(
            [env_python, "-m", "mlflow", "models", "predict", "-m", peer_model, "-i", str(data),
             "-t", "csv", "-o", str(peer_out), "--env-manager", "local"],
            peer_env,
            tmp,
        )  # fmt: skip
        ours = pd.read_csv(ours_out, keep_default_na=False)["prediction"].tolist()
        peer = json.loads(peer_out.read_text())
        peer = peer["predictions"] if isinstance(peer, dict) else peer
        batch = {
            "lifecycle_s": round(ours_s, 1),
            "mlflow_s": round(peer_s, 1),
            "speedup": round(peer_s / ours_s, 2),
            "lifecycle_peak_mb": round(ours_mb),
            "mlflow_peak_mb": round(peer_mb),
            "memory_ratio": round(ours_mb / peer_mb, 3),
            "same_predictions": ours == list(peer),
            "rows": len(ours),
        }
        # What any tool pays before its first row: AutoML's runtime imported and the model
        # loaded, in a fresh process of the same environment (CPU, wall and peak RSS).
        floor = json.loads(
            subprocess.run(
                [env_python, "-c", LOAD_FLOOR, peer_model, str(data)],
                env=peer_env, cwd=tmp, check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        batch["model_in_memory"] = floor
        # Loading, then the rows' CPU spread over every core (the other loads taken as free).
        bound = floor["wall_s"] + floor["predict_cpu_s"] / (os.cpu_count() or 1)
        batch["best_speedup_bound"] = round(peer_s / bound, 2)
        batch["memory_floor_ratio"] = round(floor["peak_mb"] / peer_mb, 3)
        results["batch"] = batch
        print(json.dumps(batch, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
