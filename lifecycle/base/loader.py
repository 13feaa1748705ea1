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
from typing import Any

from lifecycle.base.errors import LifecycleError, ScoringError
from lifecycle.base.fetch import FetchedModel, fetch_model
from lifecycle.base.refs import ModelRef
from lifecycle.base.workspaces import Workspace, quiet_mlflow_progress


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
