"""The promotion's smoke test: the model loaded, and its input example predicted, in a fresh
Python process.

The process is started before the model is downloaded, so that its imports (NumPy, pandas,
scikit-learn, skops: most of its start) overlap the download; it then reads the model's
folder from its standard input. A scikit-learn model saved with skops is loaded from its
skops file exactly as ``mlflow.sklearn`` loads it (``skops.io.load`` with the trusted types
the flavor lists, the pyfunc's predict function), without importing MLflow — the serving
warm start's lean load. Every other model goes through the toolkit's loader (MLflow's pyfunc,
or the model's own environment), as every command runs it.

Run as ``python -m lifecycle.registry.smoke`` (the child); the parent side is
:class:`SmokeTest`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lifecycle.registry.gates import GateResult

logger = logging.getLogger(__name__)

_EXPECTED = "loads and predicts"


class SmokeTest:
    """A fresh Python process waiting for a model folder to load and predict.

    Use as a context manager: the process is killed on exit if it was never given a model
    (an earlier gate failed, or the download did).
    """

    def __init__(self, timeout: float = 600.0) -> None:
        self.timeout = timeout
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        env["PYTHONWARNINGS"] = "ignore"
        self._dir = Path(tempfile.mkdtemp(prefix="lifecycle-smoke-"))
        # The child answers in a file: anything it or a library prints cannot corrupt it.
        self._answer = self._dir / "answer.json"
        self._stderr = (self._dir / "stderr.txt").open("w+", encoding="utf-8")
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "lifecycle.registry.smoke"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
            env=env,
        )

    def __enter__(self) -> SmokeTest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the process if it still runs and remove its folder."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        self._stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def skipped(self, reason: str) -> GateResult:
        """The gate's row when the test does not run (the process is stopped)."""
        self.close()
        return GateResult("smoke test", "smoke", None, _EXPECTED, None, reason)

    def run(self, model_dir: str | Path) -> GateResult:
        """Give the process ``model_dir`` and wait for its verdict (``timeout`` seconds)."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("this smoke test has already run")
        try:
            verdict = self._wait(proc, model_dir)
        finally:
            self.close()
        if isinstance(verdict, GateResult):
            return verdict
        rows, how, mlflow_imported = verdict
        where = "in a fresh process"
        if how == "skops":  # loaded from its skops file as mlflow.sklearn loads it
            where += " (skops, without MLflow)" if not mlflow_imported else " (skops)"
        if rows is None:
            return GateResult(
                "smoke test", "smoke", "loaded", _EXPECTED, True,
                f"loaded {where}; the model has no input example to predict",
            )  # fmt: skip
        return GateResult(
            "smoke test", "smoke", f"{rows} rows predicted", _EXPECTED, True,
            f"input example predicted {where}",
        )  # fmt: skip

    def _wait(self, proc: subprocess.Popen[str], model_dir: str | Path) -> Any:
        """The child's (rows, how, MLflow imported) answer, or a failed gate's row."""
        started = time.perf_counter()
        request = json.dumps({"path": str(model_dir), "answer": str(self._answer)})
        try:
            assert proc.stdin is not None
            proc.stdin.write(request + "\n")
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it died while importing: its exit code and stderr say why
        try:
            code = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return _failed(f"timed out after {self.timeout:.0f}s")
        logger.info("smoke test answered in %.1fs", time.perf_counter() - started)
        if code != 0:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().strip().splitlines() if ln.strip()]
            return _failed((lines[-1] if lines else f"exit code {code}")[:300])
        try:
            answer = json.loads(self._answer.read_text())
            return answer["rows"], answer["how"], answer["mlflow"]
        except (OSError, ValueError, KeyError):
            return _failed("no answer from the process")


def _failed(reason: str) -> GateResult:
    return GateResult("smoke test", "smoke", None, _EXPECTED, False, reason)


def smoke_test(model_dir: str | Path, timeout: float = 600.0) -> GateResult:
    """Load ``model_dir`` in a fresh Python process and predict its own input example."""
    with SmokeTest(timeout) as test:
        return test.run(model_dir)


# ------------------------------------------------------------------ the child process


def _lean_example(path: str, mlmodel: dict[str, Any]) -> Any:
    """The model's input example as the DataFrame MLflow would pass (signature columns in
    order, signature types), or None when it is not a DataFrame saved in split orient."""
    import pandas as pd

    from lifecycle.base.lean import input_columns

    info = mlmodel.get("saved_input_example_info") or {}
    if info.get("type") != "dataframe" or info.get("pandas_orient", "split") != "split":
        return None
    data = json.loads((Path(path) / str(info["artifact_path"])).read_text(encoding="utf-8"))
    frame = pd.DataFrame(data["data"], columns=data["columns"])
    dtypes = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}
    cols = input_columns(mlmodel) or []
    frame = frame[[c.name for c in cols]] if cols else frame
    return frame.astype({c.name: dtypes[c.type] for c in cols if c.type in dtypes})


def _child() -> int:
    import warnings

    warnings.simplefilter("ignore")
    # Before the folder is known: these imports overlap the parent's download.
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    try:
        import sklearn.base  # noqa: F401
        import skops.io  # noqa: F401
    except ImportError:
        pass
    from lifecycle.base.lean import lean_eligible, load_lean_sklearn, read_mlmodel

    line = sys.stdin.readline()
    if not line.strip():
        return 0  # cancelled: the parent never sent a model
    request = json.loads(line)
    path, answer = request["path"], request["answer"]
    mlmodel = read_mlmodel(path)
    how, rows = "pyfunc", None
    lean = load_lean_sklearn(path) if lean_eligible(mlmodel) is None else None
    example = _lean_example(path, mlmodel) if lean is not None else None
    if lean is not None and (example is not None or not mlmodel.get("saved_input_example_info")):
        how = "skops"
        rows = None if example is None else len(lean.predict(example))
    else:
        from mlflow.models import Model

        from lifecycle.base.loader import load_pyfunc  # here, or in the model's environment

        model = load_pyfunc(path)
        loaded = Model.load(path).load_input_example(path)
        rows = None if loaded is None else len(model.predict(loaded))
    with open(answer, "w", encoding="utf-8") as fh:
        json.dump({"rows": rows, "how": how, "mlflow": "mlflow" in sys.modules}, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
