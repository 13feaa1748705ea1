"""Builders for the serving tests: real models, real registries, real server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import requests

FEATURES = [f"f{i}" for i in range(4)]


def numeric_frame(n: int = 200, seed: int = 0, columns: list[str] | None = None) -> pd.DataFrame:
    """Random float features."""
    cols = columns or FEATURES
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(cols))), columns=cols)


def save_logreg(path: Path, n_features: int = 4, seed: int = 0) -> Path:
    """A LogisticRegression on ``f0..f{n-1}`` saved as an MLflow sklearn model with a signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X = numeric_frame(300, seed, [f"f{i}" for i in range(n_features)])
    y = (X.iloc[:, 0] + X.iloc[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(X, model.predict(X)),
        input_example=X.head(2),
        pip_requirements=["scikit-learn"],
    )
    return path


class SlowModel(mlflow.pyfunc.PythonModel):
    """Sums the feature columns times ``factor``; sleeps ``sleep`` seconds when asked to."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        if "sleep" in model_input and len(model_input):
            time.sleep(float(model_input["sleep"].max()))
        values = model_input[[c for c in model_input.columns if c != "sleep"]]
        return (values.sum(axis=1) * self.factor).to_numpy()


def _as_code_path_module() -> Any:
    """This file as the top-level module ``serving_models``: the name the model's copy of it
    (``code_paths``) is importable under wherever the model is loaded, so the pickled
    SlowModel refers to it by that name (not ``tests.support...``, which a server started
    outside the checkout cannot import)."""
    import importlib.util
    import sys

    module = sys.modules.get("serving_models")
    if module is None:
        spec = importlib.util.spec_from_file_location("serving_models", __file__)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["serving_models"] = module
        spec.loader.exec_module(module)
    return module


def save_slow_model(path: Path, factor: float) -> Path:
    """A pyfunc SlowModel (general path only) with columns f0, f1 and sleep."""
    from mlflow.models import infer_signature

    sample = pd.DataFrame({"f0": [1.0, 2.0], "f1": [0.5, 0.25], "sleep": [0.0, 0.0]})
    mlflow.pyfunc.save_model(
        str(path),
        python_model=_as_code_path_module().SlowModel(factor),
        signature=infer_signature(sample, np.array([1.5, 2.25])),
        input_example=sample,
        code_paths=[__file__],
        pip_requirements=["pandas"],
    )
    return path


class MlflowScoringServer:
    """``mlflow models serve --env-manager local`` in its own process group."""

    def __init__(self, model_dir: Path, port: int, log: Path) -> None:
        self.model_dir, self.port, self.log = model_dir, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowScoringServer:
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    str(self.model_dir),
                    "--env-manager",
                    "local",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return self

    def wait(self, timeout: float = 180.0) -> float:
        """Seconds until /ping answered 200."""
        assert self.proc is not None
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("mlflow models serve did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
