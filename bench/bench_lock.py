"""Benchmark: what the registry's lock and journal check add to a stage move (issue #15).

Alternates, on one model of a real SQLite workspace (and, with ``--server``, of a real
``mlflow server``), the stage move the toolkit did before issue #15 (read the holders, write
the stage, record the audit event: ``move_stage`` + ``record_event``) and today's
``transition`` (the same under the model's lock, after the check for an unfinished
promotion). Prints the medians and their difference as JSON.

Run: ``.venv/bin/python -m bench.bench_lock [--rounds 30] [--server]``
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lifecycle.base.audit import record_event
from lifecycle.base.workspaces import Workspace, load_config
from lifecycle.registry.stages import move_stage, transition
from lifecycle.registry.versions import log_and_register


def _model(root: Path) -> Path:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from tests.support.mlflow_models import save_sklearn_model

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    return save_sklearn_model(LogisticRegression().fit(X, [0, 1, 0, 1]), root / "m", X.head(2))


def _measure(ws: Workspace, model: Path, rounds: int) -> dict[str, float]:
    name = "bench-lock"
    for _ in range(2):
        log_and_register(ws, model, name, experiment="bench", force=True)
    before: list[float] = []
    now: list[float] = []
    for i in range(rounds):
        version = str(1 + i % 2)
        for kind in ("old", "new") if i % 2 else ("new", "old"):
            t = time.perf_counter()
            if kind == "old":
                moved = move_stage(ws, name, version, "Production", alias=None, archive=True)
                record_event(
                    ws,
                    name,
                    "transition",
                    version=version,
                    details={"to_stage": "Production", "archived": moved["archived"]},
                )
                before.append(time.perf_counter() - t)
            else:
                transition(ws, name, version, "Production")
                now.append(time.perf_counter() - t)
    old_ms, new_ms = statistics.median(before) * 1000, statistics.median(now) * 1000
    return {
        "unlocked_median_ms": round(old_ms, 1),
        "locked_median_ms": round(new_ms, 1),
        "lock_adds_ms": round(new_ms - old_ms, 1),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--server", action="store_true", help="also on a real mlflow server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as tmp:
        root = Path(tmp)
        import os

        os.chdir(root)
        model = _model(root)
        out["sqlite"] = _measure(load_config().get("dev"), model, args.rounds)
        if args.server:
            from tests.support.mlflow_server import MlflowServer

            srv = MlflowServer(root / "srv")
            srv.start()
            try:
                out["server"] = _measure(Workspace("srv", srv.url, srv.url), model, args.rounds)
            finally:
                srv.stop()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
