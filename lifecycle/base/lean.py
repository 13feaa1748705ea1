"""Loading a scikit-learn MLflow model without importing MLflow, and trusting it only once
it has been checked against MLflow's own ``pyfunc.predict``.

Importing MLflow and building its tracking store costs seconds before a server can answer
or a batch run can score. For the commonest model (the ``sklearn`` flavor saved with skops)
everything needed to predict is in two files: ``MLmodel`` (YAML: flavor, predict function,
signature) and the skops file, which is loaded exactly as ``mlflow.sklearn`` loads it
(``skops.io.load`` with the trusted types the flavor lists; no pickle). Anything else
(pickle/cloudpickle serialization, other flavors, tensor signatures) is not eligible and
goes through MLflow.

"Same answers as pyfunc" is a claim to check, not assume: :func:`fastpath_verdict` and
:func:`save_fastpath_verdict` keep, per model content digest and package versions, the
result of comparing the lean predictor with ``pyfunc.predict`` (done by whoever had MLflow
loaded). Nothing in that cache is executable: it is JSON holding a method name and a flag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle.base.files import atomic_write_text
from lifecycle.base.typemaps import NUMERIC_TYPES

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder (default ``~/.cache/mlflow-lifecycle``).
CACHE_ENV = "LIFECYCLE_CACHE_DIR"
#: Packages whose versions decide whether a recorded verdict still holds.
VERDICT_PACKAGES = ("scikit-learn", "skops", "numpy", "scipy", "mlflow")


@dataclass(frozen=True)
class InputColumn:
    """One input column of a model signature: name, MLflow type name, required or not."""

    name: str
    type: str
    required: bool = True


def read_mlmodel(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of a model directory.

    Raises:
        FileNotFoundError: the directory holds no ``MLmodel`` file.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = (Path(model_dir) / "MLmodel").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=loader) or {})  # a safe loader (C or Python)


def input_columns(mlmodel: dict[str, Any]) -> list[InputColumn] | None:
    """The signature's named input columns in order; None without a column-based signature."""
    sig = mlmodel.get("signature") or {}
    raw = sig.get("inputs")
    if not raw:
        return None
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    if not isinstance(specs, list) or not specs:
        return None
    out = []
    for spec in specs:
        if not isinstance(spec, dict) or "name" not in spec or spec.get("type") == "tensor":
            return None
        type_name = spec.get("type")
        if not isinstance(type_name, str):  # arrays, objects, maps: MLflow's own schema code
            return None
        out.append(InputColumn(str(spec["name"]), type_name, bool(spec.get("required", True))))
    return out


@dataclass
class LeanSklearn:
    """A scikit-learn model loaded from its skops file, with the pyfunc predict method."""

    estimator: Any
    method: str
    columns: tuple[InputColumn, ...]

    def predict(self, data: Any) -> Any:
        """What ``_SklearnModelWrapper.predict`` calls: the estimator's predict function."""
        return getattr(self.estimator, self.method)(data)


def sklearn_pyfunc_problem(mlmodel: dict[str, Any]) -> str | None:
    """None when the model's pyfunc is ``mlflow.sklearn``'s (it predicts with the raw
    estimator's predict function), else why not."""
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    if pyfunc.get("loader_module") != "mlflow.sklearn":
        return f"pyfunc loader is {pyfunc.get('loader_module')!r}, not mlflow.sklearn"
    return None


def matrix_columns(
    mlmodel: dict[str, Any], types: frozenset[str] = NUMERIC_TYPES
) -> tuple[str, ...] | None:
    """The signature's column names, in order, when every input is a required column of one
    of ``types`` (the model can then take one NumPy matrix); else None."""
    cols = input_columns(mlmodel)
    if not cols or any(c.type not in types or not c.required for c in cols):
        return None
    return tuple(c.name for c in cols)


def lean_eligible(mlmodel: dict[str, Any]) -> str | None:
    """None when the model can be loaded lean (its skops file, without MLflow), else why not.

    The fast paths of serving (:func:`serving.fastpath.compile_fast_path`) and batch
    (:func:`batch.fastpath.plan_lean`) decide with this and :func:`matrix_columns`.
    """
    sk = (mlmodel.get("flavors") or {}).get("sklearn") or {}
    why = sklearn_pyfunc_problem(mlmodel)
    if why is not None:
        return why
    if sk.get("serialization_format") != "skops":
        return f"serialization is {sk.get('serialization_format')!r}, not skops"
    if sk.get("code"):
        return "the model ships code paths"
    if input_columns(mlmodel) is None:
        return "no column-based signature"
    return None


def load_lean_sklearn(model_dir: str | os.PathLike[str]) -> LeanSklearn | None:
    """Load the model as ``mlflow.sklearn`` would, without MLflow; None if not eligible.

    Raises:
        Exception: whatever skops raises for a file it refuses or cannot read.
    """
    mlmodel = read_mlmodel(model_dir)
    why = lean_eligible(mlmodel)
    if why is not None:
        logger.debug("lean load of %s not possible: %s", model_dir, why)
        return None
    flavors = mlmodel["flavors"]
    pyfunc, sk = flavors["python_function"], flavors["sklearn"]
    model_file = Path(model_dir) / str(pyfunc.get("model_path") or sk.get("pickled_model"))
    method = str(pyfunc.get("predict_fn") or "predict")
    import skops.io

    estimator = skops.io.load(str(model_file), trusted=sk.get("skops_trusted_types"))
    if not callable(getattr(estimator, method, None)):
        return None
    return LeanSklearn(estimator, method, tuple(input_columns(mlmodel) or ()))


def same_predictions(a: Any, b: Any) -> bool:
    """True when two predictions are equal in type, dtype, shape and every value."""
    import pandas as pd

    if isinstance(a, (pd.DataFrame, pd.Series)) or isinstance(b, (pd.DataFrame, pd.Series)):
        return type(a) is type(b) and bool(a.equals(b))
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def agrees_with_pyfunc(
    pyfunc_model: Any, fast: Callable[[np.ndarray], Any], columns: tuple[str, ...], probes: int
) -> bool | None:
    """Check a fast predictor against ``pyfunc_model.predict`` on the model's input example
    (when it has one) and ``probes`` random rows around it.

    ``fast`` takes a float64 matrix with ``columns`` in order. Returns None when any answer
    differs (values or dtype); else whether predicting row by row gives the same answers as
    one stacked batch (micro-batching splits stacked batches).
    """
    import pandas as pd

    frames = []
    try:
        example = pyfunc_model.input_example
    except Exception:
        example = None
    if isinstance(example, pd.DataFrame) and set(columns) <= set(example.columns):
        frames.append(example[list(columns)].astype("float64"))
    rng = np.random.default_rng(0)
    base = frames[0].to_numpy() if frames else np.zeros((1, len(columns)))
    scale = np.abs(base).mean(axis=0) + 1.0
    noise = rng.normal(size=(probes, len(columns))) * scale
    frames.append(pd.DataFrame(base.mean(axis=0) + noise, columns=list(columns)))
    batchable = True
    try:
        for frame in frames:
            expected = pyfunc_model.predict(frame)
            got = fast(frame.to_numpy())
            if not same_predictions(expected, got):
                return None
            # Micro-batching splits a stacked batch: row-wise results must not depend on it.
            rows = [fast(frame.to_numpy()[i : i + 1]) for i in range(len(frame))]
            if not same_predictions(np.concatenate(rows), np.asarray(got)):
                batchable = False
    except Exception as exc:
        logger.info("fast path probe failed: %s", exc)
        return None
    return batchable


# --------------------------------------------------------------------------- verdict cache


def cache_dir() -> Path:
    """The toolkit's cache folder (``$LIFECYCLE_CACHE_DIR``, else ``~/.cache/mlflow-lifecycle``)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-lifecycle"


def package_versions() -> dict[str, str]:
    """Versions of the packages a verdict depends on (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in VERDICT_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _verdict_path(digest: str, kind: str) -> Path:
    key = json.dumps(
        {"digest": digest, "kind": kind, "versions": package_versions()}, sort_keys=True
    )
    return cache_dir() / "verdicts" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def fastpath_verdict(digest: str, kind: str) -> dict[str, Any] | None:
    """The recorded verdict for a model digest and path kind, or None if never checked here."""
    path = _verdict_path(digest, kind)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("digest") != digest or data.get("kind") != kind:
        return None
    return dict(data)


def save_fastpath_verdict(digest: str, kind: str, verdict: dict[str, Any]) -> None:
    """Record that the lean path of ``kind`` agreed with ``pyfunc.predict`` for ``digest``.

    Failures to write are logged, never raised (the cache only saves time).
    """
    path = _verdict_path(digest, kind)
    data = {**verdict, "digest": digest, "kind": kind, "versions": package_versions()}
    try:
        atomic_write_text(path, json.dumps(data, indent=1), mkdir=True)
    except OSError as exc:
        logger.info("could not write the fast-path verdict cache %s: %s", path, exc)
