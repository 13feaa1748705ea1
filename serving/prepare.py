"""Getting a model ready to serve: a URI pinned to a version and made local (through the
base's one fetch, :mod:`lifecycle.base.fetch`), or a warm start from the verified local
cache (:mod:`serving.warmstart`), and the bookkeeping around it (the cache entries for the
next start, the deployment record on the version)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lifecycle.base.errors import ServingError
from lifecycle.base.fetch import FetchedModel, ModelFetch, fetch_model
from lifecycle.base.refs import ModelRef, parse_model_uri
from lifecycle.base.workspaces import Workspace
from serving.fastpath import ModelInfo, Scorer, load_scorer
from serving.options import ServeOptions

logger = logging.getLogger(__name__)


@dataclass
class PreparedModel:
    """A model URI pinned to a version and downloaded to a local directory."""

    path: str
    info: ModelInfo
    follows: bool = False
    #: The registry's source URI of the version (None for a local directory).
    source: str | None = None
    #: True when ``path`` is a download (not the artifact store's own directory).
    downloaded: bool = False
    #: ``warm``: from the local cache, registry not asked yet; ``cold``: through the registry.
    start: str = "cold"
    pin: Any = None
    #: Consent to unpickle is recorded on the version (kept in the warm-start pin).
    consented: bool = False


def prepared_from(fetched: FetchedModel, ws: Workspace) -> PreparedModel:
    """The :class:`PreparedModel` of a fetched version."""
    resolved = fetched.resolved
    ref = resolved.ref
    info = ModelInfo(
        name=resolved.name,
        version=resolved.version,
        uri=str(ref),
        stage=resolved.stage if resolved.stage not in (None, "None") else None,
        alias=ref.alias,
        digest=fetched.digest,
        workspace=ws.name,
    )
    return PreparedModel(
        path=fetched.path,
        info=info,
        follows=ref.follows_registry,
        source=resolved.source if ref.path is None else None,
        downloaded=fetched.downloaded,
        consented=bool(fetched.consent),
    )


def prepare_model(ws: Workspace, model_uri: str | ModelRef, dst: str) -> PreparedModel:
    """Resolve ``model_uri`` in ``ws`` and make that version local (``dst`` for a download;
    a local artifact store is loaded in place).

    Raises:
        ModelNotFoundError: the model, version, stage or alias does not exist.
        ServingError: the artifacts cannot be downloaded.
    """
    fetched = fetch_model(
        ws, model_uri, dst, in_place=True, digest=True, error=ServingError,
        restricted_action="serve",
    )  # fmt: skip
    return prepared_from(fetched, ws)


def fetch_child(ws: Workspace, model_uri: str | ModelRef, dst: str) -> ModelFetch:
    """:func:`prepare_model`'s fetch, run in a child process (enter it, then ``result()``)."""
    return ModelFetch(
        ws, model_uri, dst=dst, in_place=True, digest=True, error=ServingError, child=True,
        restricted_action="serve",
    )  # fmt: skip


def warm_start(pin: Any, sink: Any) -> tuple[PreparedModel, Scorer] | None:
    """A prepared model and scorer from the local cache for ``pin``, or None (a cold start,
    which asks the registry, also when the cached files need a consent the pin lacks)."""
    from lifecycle.base.consent import trusted_by_flag, unpickling_reason
    from serving.warmstart import lean_scorer

    if not (pin.consented or trusted_by_flag()) and unpickling_reason(pin.path):
        logger.info("no consent to unpickle %s v%s was cached: cold start", pin.name, pin.version)
        return None

    scorer = lean_scorer(pin, sink)
    if scorer is None:
        return None
    prepared = PreparedModel(
        path=pin.path,
        info=scorer.info,
        source=pin.source,
        downloaded=pin.copied,
        start="warm",
        pin=pin,
        consented=pin.consented,
    )
    return prepared, scorer


def directory_info(options: ServeOptions, uri: str, digest: str | None = None) -> ModelInfo:
    """What a server of a model directory says it serves (``--name``/``--model-version``)."""
    return ModelInfo(options.model_name, options.model_version, uri, digest=digest)


def directory_pin(path: str, info: ModelInfo) -> Any:
    """A warm-start pin for a model directory served as is, or None (a cold start).

    A directory has no registry to ask, so its pin is made fresh from the files: their
    content digest now, and a fast-path verdict that an earlier start (or ``serve
    --prepare-only DIR`` at image build time) recorded for exactly that digest and these
    package versions. Changed files have another digest, so they start cold.
    """
    from lifecycle.base.digest import model_digest
    from lifecycle.base.lean import fastpath_verdict
    from serving.warmstart import VERDICT_KIND, Pin

    try:
        digest = model_digest(path)
    except OSError:
        return None
    if fastpath_verdict(digest, VERDICT_KIND) is None:
        return None
    return Pin(
        tracking_uri="",
        registry_uri="",
        name=info.name or path,
        version=str(info.version or ""),
        path=path,
        digest=digest,
        source=None,
        registry_digest=None,
        info={**info.to_dict(), "digest": digest},
    )


def cached_pin(ws: Workspace, ref: ModelRef) -> Any:
    """The warm-start cache's pin for a pinned-version reference (files matching their digest)."""
    from serving.warmstart import load_pin

    if ref.name is None or ref.version is None:
        return None
    return load_pin(ws, ref.name, ref.version)


def remember(ws: Workspace, prepared: PreparedModel, scorer: Scorer) -> None:
    """Cache a cold start's resolution and fast-path verdict for the next (warm) start."""
    from serving.warmstart import record_verdict, save_pin

    if prepared.info.version is None:
        return
    record_verdict(scorer, prepared.path)
    save_pin(
        ws,
        prepared.path,
        prepared.info,
        prepared.source,
        prepared.downloaded,
        consented=prepared.consented,
    )


def record_start(ws: Workspace | None, info: ModelInfo, options: ServeOptions) -> None:
    """Record that this server serves ``info``'s version (a deployment tag); never raises."""
    if ws is None or not options.record or info.name is None or info.version is None:
        return
    from lifecycle.base.deployments import record_deployment
    from lifecycle.base.workspaces import one_http_attempt

    try:
        with one_http_attempt():  # a registry that is down must not hold the server up
            record_deployment(
                ws,
                info.name,
                info.version,
                kind="serving",
                target=f"{options.host}:{options.port}",
                details={"uri": info.uri, "pid": os.getpid(), "workers": options.workers},
            )
    except Exception as exc:  # recording is bookkeeping; serving goes on
        logger.warning(
            "could not record the deployment on %s v%s: %s", info.name, info.version, exc
        )


@contextlib.contextmanager
def model_dir() -> Iterator[str]:
    """A temporary folder for downloaded model files, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="lifecycle-serve-") as tmp:
        yield tmp


def prepare_cache(ws: Workspace, model_uri: str) -> dict[str, Any]:
    """Resolve, download, load and verify a pinned version into the warm-start cache.

    For container images and deploy scripts: run it where the server will run, and the
    server's first start is warm.

    Returns:
        What was cached: name, version, path, digest, fast path method.

    Raises:
        InvalidArgumentError: the URI is not a pinned version (``models:/NAME/N``).
        ModelNotFoundError, ServingError: as for :func:`serving.server.serve`.
    """
    from lifecycle.base.errors import InvalidArgumentError
    from serving.warmstart import lean_scorer, load_pin

    ref = parse_model_uri(model_uri)
    if ref.path is not None:
        return _prepare_directory(ws, ref)
    if ref.name is None or ref.version is None:
        raise InvalidArgumentError(
            f"Cannot cache {model_uri}: only a pinned version (models:/NAME/N) is served warm; "
            "a stage, alias or latest URI is resolved at every start"
        )
    with contextlib.suppress(ImportError):
        import skops.io  # noqa: F401
    with model_dir() as tmp:
        prepared = prepare_model(ws, ref, tmp)
        scorer = load_scorer(prepared.path, prepared.info)
        remember(ws, prepared, scorer)
    pin = load_pin(ws, ref.name, ref.version)
    warm = lean_scorer(pin) if pin is not None else None
    return {
        "name": ref.name,
        "version": ref.version,
        "workspace": ws.name,
        "path": pin.path if pin else None,
        "digest": pin.digest if pin else None,
        "fast_path": scorer.fast.method if scorer.fast else None,
        "warm_start": warm is not None,
    }


def _prepare_directory(ws: Workspace, ref: ModelRef) -> dict[str, Any]:
    """:func:`prepare_cache` for a model directory: load it, check the fast path against
    pyfunc and record the verdict for the files' digest, so that serving the same files
    (with the same packages) starts warm."""
    from lifecycle.base.digest import model_digest
    from serving.warmstart import lean_scorer, record_verdict

    fetched = fetch_model(ws, ref, None, in_place=True, digest=True, error=ServingError)
    path = fetched.path
    scorer = load_scorer(path, ModelInfo(None, None, str(ref.path)))
    record_verdict(scorer, path)
    digest = model_digest(path)
    pin = directory_pin(path, ModelInfo(None, None, str(ref.path)))
    return {
        "name": None,
        "version": None,
        "workspace": None,
        "path": path,
        "digest": digest,
        "fast_path": scorer.fast.method if scorer.fast else None,
        "warm_start": pin is not None and lean_scorer(pin) is not None,
    }
