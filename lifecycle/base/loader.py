"""Loading a model's pyfunc: the one place the toolkit turns model files into something
that predicts (monitoring, gates, baselines, importers, the batch workers and the server's
general path all come through here).

Today every model is loaded in this process with ``mlflow.pyfunc.load_model``. This is the
seam where a model that needs an environment of its own (issue #14: a worker process inside
that environment, data crossing as Arrow) and the user's consent to unpickle (issue #16)
plug in, without their callers changing.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifecycle.base.errors import LifecycleError, ScoringError
from lifecycle.base.fetch import FetchedModel, fetch_model
from lifecycle.base.refs import ModelRef
from lifecycle.base.workspaces import Workspace, quiet_mlflow_progress

#: Files that hold pickles, by how they end.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle")


def unpickling_reason(model_dir: str | Path) -> str | None:
    """Why loading the MLflow model in ``model_dir`` would unpickle (run code from) a file,
    or None when it would not. Read from ``MLmodel`` and the file names only.

    A scikit-learn model saved with skops and a models-from-code pyfunc load without
    unpickling; a pickle or cloudpickle serialization, a cloudpickled ``python_model``, or
    any pickle file among the model's files do not.
    """
    import yaml

    root = Path(model_dir)
    mlmodel = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8")) or {}
    flavors = mlmodel.get("flavors") or {}
    sk = flavors.get("sklearn") or {}
    fmt = sk.get("serialization_format")
    if sk and fmt != "skops":
        return f"its scikit-learn model is serialized with {fmt or 'pickle'}"
    pyfunc = flavors.get("python_function") or {}
    if pyfunc.get("cloudpickle_version") or str(pyfunc.get("python_model", "")).endswith(
        PICKLE_SUFFIXES
    ):
        return "its python_model is cloudpickled"
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.lower().endswith(PICKLE_SUFFIXES):
            return f"it holds the pickle file '{path.relative_to(root)}'"
    return None


def load_pyfunc(model_dir: str, *, suppress_warnings: bool = False) -> Any:
    """The pyfunc of the MLflow model in the local directory ``model_dir``.

    Raises:
        Exception: whatever MLflow raises for a model it cannot load.
    """
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_dir, suppress_warnings=suppress_warnings)


@contextlib.contextmanager
def fetched_pyfunc(
    ws: Workspace,
    uri: str | ModelRef,
    *,
    error: type[LifecycleError] = ScoringError,
) -> Iterator[tuple[FetchedModel, Any]]:
    """Fetch ``uri`` from ``ws`` (:func:`lifecycle.base.fetch.fetch_model`) and load its
    pyfunc; a download made for it is removed when the block ends.

    Raises:
        ModelNotFoundError: the model, version, stage or alias does not exist.
        LifecycleError: ``error``, the files could not be downloaded.
    """
    with tempfile.TemporaryDirectory(prefix="lifecycle-load-") as tmp:
        with quiet_mlflow_progress():
            fetched = fetch_model(ws, uri, tmp, in_place=True, error=error)
        yield fetched, load_pyfunc(fetched.path)
