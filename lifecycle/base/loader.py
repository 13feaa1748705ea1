"""Loading a model's pyfunc: the one place the toolkit turns model files into something
that predicts (monitoring, gates, baselines, importers, the batch workers and the server's
general path all come through here).

A model the current environment can load is loaded in this process with
``mlflow.pyfunc.load_model``. A model that needs an environment of its own (AutoML's
runtime; a model whose requirements are not installed here) runs in a worker process inside
that environment, data crossing as Arrow (:mod:`lifecycle.base.env_proxy`); which one is
chosen by ``env_manager`` (``auto``, ``local``, ``virtualenv`` as MLflow names them), whose
default is ``$LIFECYCLE_ENV_MANAGER`` so that the CLI's ``--env-manager`` reaches every
process it starts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from lifecycle.base.consent import unpickling_reason
from lifecycle.base.errors import LifecycleError, ScoringError, UntrustedPickleError
from lifecycle.base.fetch import FetchedModel, fetch_model
from lifecycle.base.refs import ModelRef
from lifecycle.base.workspaces import Workspace, quiet_mlflow_progress

#: The environment variable that carries ``--env-manager`` to every process.
ENV_MANAGER_VAR = "LIFECYCLE_ENV_MANAGER"


def load_pyfunc(
    model_dir: str,
    *,
    suppress_warnings: bool = False,
    env_manager: str | None = None,
    env_workers: int = 1,
) -> Any:
    """The pyfunc of the MLflow model in the local directory ``model_dir``: loaded here, or
    run in a worker inside the model's own environment (see the module's docstring);
    ``env_workers`` such workers side by side for batch scoring.

    Raises:
        InvalidArgumentError: an unknown ``env_manager``.
        ModelEnvError: the model's environment is not prepared or its worker failed.
        UntrustedPickleError: the model would unpickle in its environment and no consent
            was recorded at import.
        Exception: whatever MLflow raises for a model it cannot load here.
    """
    from lifecycle.base.envs import choose_env_manager

    manager = env_manager or os.environ.get(ENV_MANAGER_VAR) or "auto"
    spec = choose_env_manager(model_dir, manager)
    if spec is None:
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(model_dir, suppress_warnings=suppress_warnings)
    from lifecycle.base.env_proxy import env_pyfunc

    reason = unpickling_reason(model_dir)
    if reason and not spec.trust_pickle:
        raise UntrustedPickleError(
            f"Refusing to load the model in '{model_dir}' in its environment: {reason}, and "
            "no consent was recorded (import it with --trust-pickle if you trust its origin)"
        )
    return env_pyfunc(model_dir, spec, allow_pickle=bool(reason), workers=env_workers)


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
