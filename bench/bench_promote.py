"""Benchmark: promote a ~50 MB model between two ``mlflow server`` processes.

In the same run, the same source version is copied with mlflow-export-import's
``copy-model-version`` (PyPI ``mlflow-export-import-v2``), and both results are loaded from
the target server with ``mlflow.pyfunc.load_model`` and asked to predict.

mlflow-export-import depends on mlflow-skinny and would change this project's environment,
so it must live in a separate virtualenv: pass its ``bin`` folder with ``--export-import-bin``
(see bench/README.md). Without it, only ``lifecycle promote`` is timed.

Run: ``.venv/bin/python -m bench.bench_promote [--mb 50] [--export-import-bin /tmp/ei/bin]``
"""

from __future__ import annotations

import argparse
import json
import logging
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

from lifecycle.base.workspaces import Workspace, quiet_mlflow_warnings, use_workspace
from lifecycle.registry.promote import promote
from tests.support.mlflow_server import MlflowServer, premigrate_sqlite

logger = logging.getLogger("bench.promote")


def _model(target_mb: float) -> tuple[Any, Any]:
    """A RandomForest whose skops file is about ``target_mb`` MB (random labels: deep trees)."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    rows = 20_000
    X = pd.DataFrame(rng.normal(size=(rows, 20)), columns=[f"f{i}" for i in range(20)])
    y = rng.integers(0, 2, size=rows)
    # About 0.57 MB of skops per tree at this size (measured).
    trees = max(1, round(target_mb / 0.57))
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=1).fit(X, y)
    return model, X


def _log_source(ws: Workspace, name: str, model: Any, X: Any) -> tuple[str, float]:
    """Log + register in the source server the MLflow 3 way (source = models:/m-...)."""
    import mlflow
    import mlflow.sklearn

    with use_workspace(ws), quiet_mlflow_warnings():
        mlflow.set_experiment("bench")
        with mlflow.start_run():
            mlflow.log_params({"n_estimators": model.n_estimators})
            for step in range(5):
                mlflow.log_metric("accuracy", 0.5 + step / 100, step=step)
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                input_example=X.head(3),
                pip_requirements=["scikit-learn", "pandas"],
                skops_trusted_types=["sklearn.tree._tree.Tree"],
            )
        mv = mlflow.register_model(info.model_uri, name)
    size_mb = _dir_mb(ws, name, str(mv.version))
    return str(mv.version), size_mb


def _dir_mb(ws: Workspace, name: str, version: str) -> float:
    from mlflow.artifacts import download_artifacts

    with use_workspace(ws), tempfile.TemporaryDirectory() as tmp:
        local = download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        total = sum(p.stat().st_size for p in Path(local).rglob("*") if p.is_file())
    return total / 1e6


def _loads(ws: Workspace, uri: str, X: Any) -> tuple[bool, str]:
    import mlflow.pyfunc

    try:
        with use_workspace(ws):
            pred = mlflow.pyfunc.load_model(uri).predict(X.head(5))
        return True, f"predicted {len(pred)} rows"
    except Exception as exc:  # the point is to report whether it loads
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _export_import(
    bin_dir: Path, src: MlflowServer, dst: MlflowServer, name: str, version: str
) -> dict[str, Any]:
    exe = bin_dir / "copy-model-version"
    cmd = [
        str(exe),
        "--src-model",
        name,
        "--src-version",
        version,
        "--dst-model",
        f"{name}-ei",
        "--src-registry-uri",
        src.url,
        "--dst-registry-uri",
        dst.url,
        "--copy-lineage-tags",
        "true",
        "--dst-experiment-name",
        "bench-ei",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = dst.url  # the tool insists on an http(s) tracking URI
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=900)
    wall = time.perf_counter() - start
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"cmd": " ".join(cmd), "seconds": wall, "exit_code": proc.returncode, "tail": tail}


_BARE_COPY = """
import sys, tempfile, mlflow
from mlflow.artifacts import download_artifacts
src, dst, uri = sys.argv[1:4]
with tempfile.TemporaryDirectory() as tmp:
    mlflow.set_tracking_uri(src)
    local = download_artifacts(artifact_uri=uri, dst_path=tmp)
    mlflow.set_tracking_uri(dst)
    mlflow.set_experiment("bare-copy")
    with mlflow.start_run():
        mlflow.log_artifacts(local, "model")
"""


def _fresh_process_rounds(
    root: Path, src: MlflowServer, dst: MlflowServer, name: str, version: str, rounds: int
) -> dict[str, Any]:
    """What a user waits for, each in a fresh process, alternating for ``rounds`` rounds: the
    bare artifact copy (MLflow's download_artifacts + log_artifacts, the floor for moving the
    bytes), ``lifecycle promote --no-smoke`` and ``lifecycle promote`` (with the smoke test)."""
    import statistics

    config = root / "lifecycle.yaml"
    config.write_text(
        f"workspaces:\n  bsrc: {{tracking_uri: '{src.url}'}}\n  bdst: {{tracking_uri: '{dst.url}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["LIFECYCLE_CONFIG"] = str(config)
    promote_cmd = [sys.executable, "-m", "lifecycle", "promote", name, "--version", version,
                   "--from", "bsrc", "--to", "bdst", "--force", "--json"]  # fmt: skip
    commands = {
        "bare_copy": [
            sys.executable,
            "-c",
            _BARE_COPY,
            src.url,
            dst.url,
            f"models:/{name}/{version}",
        ],
        "promote_no_smoke": [*promote_cmd, "--no-smoke"],
        "promote": promote_cmd,
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(rounds):
        for key, cmd in commands.items():
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            times[key].append(round(time.perf_counter() - t, 2))
            if proc.returncode != 0:
                raise SystemExit(f"{key} failed: {proc.stderr[-1500:]}")
            if key == "promote":
                gates = json.loads(proc.stdout)["gates"]
                smoke = next(g for g in gates if g["kind"] == "smoke")
                assert smoke["passed"] is True, smoke
            logger.info("%s: %.2fs", key, times[key][-1])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "seconds": times,
        "median": med,
        "promote_over_bare_copy": round(med["promote"] / med["bare_copy"], 2),
        "promote_over_promote_no_smoke": round(med["promote"] / med["promote_no_smoke"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="model size to aim for (MB)")
    parser.add_argument("--export-import-bin", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="bench-promote-"))
    src_srv, dst_srv = MlflowServer(root / "src"), MlflowServer(root / "dst")
    result: dict[str, Any] = {}
    try:
        t = time.perf_counter()
        for srv in (src_srv, dst_srv):  # alembic migrations are not thread-safe: one by one
            premigrate_sqlite(srv.root / "mlflow.db")
        starters = [threading.Thread(target=s.start) for s in (src_srv, dst_srv)]
        for th in starters:
            th.start()
        for th in starters:
            th.join()
        if src_srv.proc is None or dst_srv.proc is None:
            raise SystemExit("an mlflow server did not start; see the log above")
        logger.info("two servers up in %.1fs", time.perf_counter() - t)
        src = Workspace("bench-src", src_srv.url, src_srv.url)
        dst = Workspace("bench-dst", dst_srv.url, dst_srv.url)
        model, X = _model(args.mb)
        name = "bench-rf"
        version, size_mb = _log_source(src, name, model, X)
        result["model_mb"] = round(size_mb, 1)
        logger.info("source %s v%s: %.1f MB of model artifacts", name, version, size_mb)

        result["fresh_processes"] = _fresh_process_rounds(
            root, src_srv, dst_srv, name, version, args.rounds
        )

        t = time.perf_counter()
        res = promote(src, dst, name, version=version, target_stage="Production")
        ours = time.perf_counter() - t
        smoke = next(g for g in res.gates if g.kind == "smoke")
        ok, detail = _loads(dst, f"models:/{name}/{res.version}", X)
        result["lifecycle_promote"] = {
            "seconds": round(ours, 2),
            "target_version": res.version,
            "loads": ok,
            "detail": detail,
            "smoke_test": smoke.passed,
        }
        t = time.perf_counter()
        copy_only = promote(src, dst, name, version=version, smoke=False, force=True)
        result["lifecycle_promote_without_smoke_test"] = {
            "seconds": round(time.perf_counter() - t, 2),
            "target_version": copy_only.version,
        }
        t = time.perf_counter()
        again = promote(src, dst, name, version=version, smoke=False)
        result["lifecycle_promote_again_seconds"] = round(time.perf_counter() - t, 2)
        result["lifecycle_promote_again_created"] = again.created

        if args.export_import_bin:
            ei = _export_import(args.export_import_bin, src_srv, dst_srv, name, version)
            if ei["exit_code"] == 0:
                ok, detail = _loads(dst, f"models:/{name}-ei/latest", X)
                with quiet_mlflow_warnings():
                    mvs = dst.client().search_model_versions(f"name='{name}-ei'")
                ei["source"] = mvs[0].source if mvs else None
            else:
                ok, detail = False, "copy-model-version failed"
            ei.update(loads=ok, detail=detail, seconds=round(ei["seconds"], 2))
            result["export_import_copy_model_version"] = ei
            if ei["seconds"]:
                result["ratio_lifecycle_over_export_import"] = round(ours / ei["seconds"], 2)
                result["ratio_without_smoke_over_export_import"] = round(
                    result["lifecycle_promote_without_smoke_test"]["seconds"] / ei["seconds"], 2
                )
    finally:
        src_srv.stop()
        dst_srv.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
