"""The scoring server: a plain-asyncio HTTP/1.1 server answering MLflow's and Azure's protocols.

Why not FastAPI/uvicorn: one request to a small model costs a few hundred microseconds of
model work; a framework's routing, middleware and thread hand-offs cost ten times that. This
server parses HTTP itself (keep-alive, ``Content-Length`` bodies), answers fast-path
requests on the event loop, and sends everything else to MLflow's own scoring function on
a thread pool (with a per-request timeout).

Routes: ``POST /invocations``; ``GET /ping`` and ``/health`` (200 once the model is loaded);
``GET /version`` (model name, version, stage/alias, digest); ``GET /metrics`` (Prometheus
text); ``GET /openapi.json``.

Operations: adaptive micro-batching (requests that arrive in the same event-loop turn are
stacked into one prediction when the model allows it); ``workers`` processes sharing the
port with ``SO_REUSEPORT``; ``api_key`` (``Authorization: Bearer KEY``, or
``$LIFECYCLE_SERVE_API_KEY``); body size limit (413) and per-request timeout (504);
graceful SIGTERM (stop accepting, finish in-flight requests, exit 0); stage/alias
following (poll the registry, load the new version beside the old one, swap between
requests); ``log_inputs`` (Parquet part files); each start recorded on the model version.

This module owns :func:`serve` (start-up: warm or cold, one worker or several). The rest
lives one concept per module: :mod:`serving.options`, :mod:`serving.http` (the HTTP/1.1
parser), :mod:`serving.app` (routes, micro-batching), :mod:`serving.openapi`,
:mod:`serving.metrics` (Prometheus), :mod:`serving.prepare` (fetching the model, the
warm-start cache), :mod:`serving.follow` (registry following, warm-start confirmation),
:mod:`serving.worker` (one worker's event loop) and :mod:`serving.supervisor` (several).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from lifecycle.base.errors import InvalidArgumentError, ServingError
from lifecycle.base.refs import ModelRef, parse_model_uri
from lifecycle.base.workspaces import Workspace
from serving.fastpath import ModelInfo
from serving.options import API_KEY_ENV, DEFAULT_MAX_BODY, ServeOptions, ServeTarget
from serving.prepare import (
    PreparedModel,
    cached_pin,
    directory_info,
    directory_pin,
    fetch_child,
    model_dir,
    prepare_cache,
    prepare_model,
    prepared_from,
    warm_start,
)
from serving.supervisor import ready_fd_from_env, run_workers, worker_main
from serving.worker import listen_socket, run_worker

logger = logging.getLogger(__name__)

__all__ = ["ServeOptions", "prepare_cache", "serve"]


def serve(
    ws: Workspace | None,
    model_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    timeout: float = 60.0,
    log_inputs: str | None = None,
    poll_interval: float = 30.0,
    record: bool = True,
    cache: bool = True,
    max_connections: int = 1024,
    header_timeout: float = 10.0,
    keepalive_timeout: float = 5.0,
    model_name: str | None = None,
    model_version: str | None = None,
) -> None:
    """Serve ``model_uri`` (resolved in ``ws``) over HTTP until SIGTERM/SIGINT (blocking).

    See :func:`serving.prepare.prepare_cache` for filling the warm-start cache without serving.

    Args:
        ws: the workspace the URI is resolved in (None only for a local model directory).
        model_uri: ``models:/NAME/N``, ``/Stage``, ``@alias``, ``/latest`` or a directory;
            stage, alias and latest URIs are followed (``poll_interval`` seconds, 0: off).
        workers: processes sharing the port (``SO_REUSEPORT``).
        api_key: require ``Authorization: Bearer KEY`` (default ``$LIFECYCLE_SERVE_API_KEY``).
        max_body_bytes: larger bodies are answered 413.
        timeout: seconds per request on the general path before answering 504.
        log_inputs: folder for Parquet logs of inputs and predictions.
        record: record the start on the model version (``lifecycle.base.deployments``).
        cache: start a pinned version from its verified local copy when a previous start
            left one (:mod:`serving.warmstart`), asking the registry once ready; False:
            always resolve and load through the registry first.
        max_connections: open connections per worker beyond which a new one gets 503.
        header_timeout: seconds a request may take to arrive once it started (else 408).
        keepalive_timeout: seconds an idle keep-alive connection stays open.
        model_name, model_version: what a model directory is called in ``/version`` and the
            V2 routes (default ``model``, no version); only for a directory.

    Raises:
        ServingError: the model fails to load, the port is taken, or a worker fails to start.
        ModelNotFoundError: the URI does not resolve.
    """
    options = ServeOptions(
        host=host,
        port=port,
        workers=max(1, int(workers)),
        api_key=api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None,
        max_body_bytes=int(max_body_bytes),
        timeout=float(timeout),
        log_inputs=log_inputs,
        poll_interval=float(poll_interval),
        record=record,
        cache=cache,
        max_connections=int(max_connections),
        header_timeout=float(header_timeout),
        keepalive_timeout=float(keepalive_timeout),
        model_name=model_name,
        model_version=None if model_version is None else str(model_version),
    )
    if ws is None and not Path(model_uri).is_dir():
        raise ServingError(f"A workspace is needed to resolve {model_uri}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Fail fast when the port is taken, before spending seconds on loading the model.
    listen_socket(options.host, options.port, reuse_port=options.workers > 1).close()
    # The URI is parsed once here; the reference travels to every worker.
    ref = parse_model_uri(model_uri) if ws is not None else ModelRef(path=Path(model_uri))
    if ref.path is None and (model_name or model_version):
        raise InvalidArgumentError(
            f"--name and --model-version name a model directory; {model_uri} is named by the "
            "registry"
        )
    if ref.path is not None:
        options.record = False  # a directory is no registered version to record on
    target = ServeTarget(ws, ref, options)
    with model_dir() as tmp, contextlib.ExitStack() as stack:
        if ref.path is not None:
            info = directory_info(options, model_uri)
            pin = directory_pin(str(ref.path), info) if options.cache else None
        else:
            pin = cached_pin(ws, ref) if ws is not None and options.cache else None
        child = None
        if ws is not None and pin is None and (os.cpu_count() or 1) > 1:
            # Resolving and downloading (MLflow's import, its store) run in another process
            # while this one imports the model's libraries: a cold start's two longest steps
            # side by side instead of one after the other.
            child = stack.enter_context(fetch_child(ws, ref, tmp))
        # skops (scikit-learn models) scans every loaded module for its trusted types when
        # imported: importing it before MLflow's hundreds of modules makes that scan shorter.
        with contextlib.suppress(ImportError):
            import skops.io  # noqa: F401
        warm = warm_start(pin, None) if pin is not None else None
        scorer = None
        if warm is not None:
            prepared, scorer = warm
        elif child is not None:
            # The fast path is checked against pyfunc: import it while the child resolves.
            with contextlib.suppress(ImportError):
                import mlflow.pyfunc  # noqa: F401
            assert ws is not None
            prepared = prepared_from(child.result(), ws)
        elif ws is not None:
            prepared = prepare_model(ws, ref, tmp)
        else:
            from lifecycle.base.consent import require_consent

            require_consent(model_uri, recorded=None)  # a model directory: --trust-pickle
            prepared = PreparedModel(model_uri, ModelInfo(None, None, model_uri))
        if ref.path is not None and prepared.start == "cold":
            prepared.info = directory_info(options, prepared.info.uri, prepared.info.digest)
        if options.workers == 1:
            run_worker(target, prepared, ready_fd=ready_fd_from_env(), scorer=scorer)
            return
        run_workers(target, prepared, scorer)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        worker_main()
