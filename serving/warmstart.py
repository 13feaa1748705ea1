"""Warm starts: serve a pinned version from a verified local copy, check the registry after.

A registered version's artifacts never change, so once a server has resolved
``models:/NAME/N`` in a workspace and loaded it, the next start does not need the registry
(or MLflow, or its tracking store) before it can answer. What it keeps, per workspace,
name and version (a *pin*, JSON under :func:`lifecycle.base.lean.cache_dir`):

* where the model's files are (the artifact store's own directory for a local workspace,
  else a copy taken from the download) and their content digest;
* what the registry said (source URI, ``lifecycle.content_digest`` tag, stage).

A warm start checks the files against the digest, loads the scikit-learn model with skops
(no MLflow), and serves the fast path that a previous start verified against
``pyfunc.predict`` for exactly this digest and these package versions (the verdict cache
in :mod:`lifecycle.base.lean`). Once ``/health`` is ready, a background thread imports MLflow,
loads the pyfunc model for the general path (requests the fast path does not take wait
for it), asks the registry whether the version still has the same source and digest, and
swaps in the registry's version if it does not; a version the registry no longer has stops
the server (exit 1), an unreachable registry is asked again later while the verified copy
serves. A missing pin, verdict or file, or a changed digest, makes the start cold: the
normal path through the registry, which then writes the pin.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lifecycle.base.files import atomic_write_text
from lifecycle.base.lean import (
    cache_dir,
    fastpath_verdict,
    load_lean_sklearn,
    save_fastpath_verdict,
)
from lifecycle.base.loader import load_pyfunc
from lifecycle.base.tags import DIGEST_TAG, PICKLE_CONSENT_TAG
from lifecycle.base.workspaces import Workspace
from serving.fastpath import FastPredictor, ModelInfo, Scorer, numpy_program

logger = logging.getLogger(__name__)

#: The verdict-cache kind of the serving fast path.
VERDICT_KIND = "serving-fastpath"
PIN_VERSION = 1
#: How many downloaded model copies the cache keeps (least recently served go first).
MAX_COPIES_ENV = "LIFECYCLE_CACHE_MAX_MODELS"
DEFAULT_MAX_COPIES = 20


@dataclass(frozen=True)
class Pin:
    """What a cold start learnt about one registered version in one workspace."""

    tracking_uri: str
    registry_uri: str
    name: str
    version: str
    path: str
    digest: str
    source: str | None
    registry_digest: str | None
    info: dict[str, Any]
    copied: bool = False
    pin_version: int = PIN_VERSION
    #: The version carried a recorded consent to unpickle when it was cached.
    consented: bool = False


def _key(ws: Workspace, name: str, version: str) -> str:
    text = json.dumps([ws.tracking_uri, ws.registry_uri, name, str(version)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _pin_file(key: str) -> Path:
    return cache_dir() / "pins" / f"{key}.json"


def load_pin(ws: Workspace, name: str, version: str) -> Pin | None:
    """The pin of ``models:/name/version`` in ``ws`` if its files still match their digest."""
    from lifecycle.base.digest import model_digest

    key = _key(ws, name, version)
    try:
        data = json.loads(_pin_file(key).read_text(encoding="utf-8"))
        pin = Pin(**data)
    except (OSError, ValueError, TypeError):
        return None
    if pin.pin_version != PIN_VERSION or (pin.tracking_uri, pin.name, pin.version) != (
        ws.tracking_uri,
        name,
        str(version),
    ):
        return None
    if not (Path(pin.path) / "MLmodel").is_file():
        logger.info("cached copy of %s v%s is gone: cold start", name, version)
        return None
    if model_digest(pin.path) != pin.digest:
        logger.warning("files of %s v%s changed since they were cached: cold start", name, version)
        return None
    with contextlib.suppress(OSError):  # recently served: kept longest by prune_copies()
        os.utime(_pin_file(key))
    return pin


def save_pin(
    ws: Workspace,
    path: str,
    info: ModelInfo,
    source: str | None,
    downloaded: bool,
    *,
    consented: bool = False,
) -> Pin | None:
    """Remember a cold start's resolution (copying a downloaded model into the cache).

    Failures are logged, never raised: the pin only saves time on the next start.
    """
    from lifecycle.base.digest import model_digest

    if info.name is None or info.version is None:
        return None
    key = _key(ws, info.name, info.version)
    try:
        target = path
        if downloaded:
            final = cache_dir() / "models" / key
            if not (final / "MLmodel").is_file() or model_digest(final) != model_digest(path):
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
                shutil.copytree(path, tmp, dirs_exist_ok=True)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
            target = str(final)
        pin = Pin(
            tracking_uri=ws.tracking_uri,
            registry_uri=ws.registry_uri,
            name=info.name,
            version=str(info.version),
            path=target,
            digest=model_digest(target),
            source=source,
            registry_digest=info.digest,
            info=info.to_dict(),
            copied=downloaded,
            consented=consented,
        )
        file = _pin_file(key)
        atomic_write_text(file, json.dumps(asdict(pin), indent=1), mkdir=True)
        if downloaded:
            prune_copies()
        return pin
    except OSError as exc:
        logger.info("could not cache %s v%s for warm starts: %s", info.name, info.version, exc)
        return None


def prune_copies(keep: int | None = None) -> list[str]:
    """Delete the downloaded copies (and pins) beyond the ``keep`` most recently served.

    ``keep`` defaults to ``$LIFECYCLE_CACHE_MAX_MODELS`` (20). Pins of local workspaces point
    into the workspace's own artifact store and cost nothing: they are left alone.

    Returns:
        The names of the pins removed.
    """
    if keep is None:
        try:
            keep = int(os.environ.get(MAX_COPIES_ENV, DEFAULT_MAX_COPIES))
        except ValueError:
            keep = DEFAULT_MAX_COPIES
    copies = []
    for file in (cache_dir() / "pins").glob("*.json"):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if data.get("copied"):
                copies.append((file.stat().st_mtime, file, Path(str(data.get("path")))))
        except (OSError, ValueError):
            continue
    removed = []
    for _mtime, file, path in sorted(copies, reverse=True)[max(0, keep) :]:
        if path.is_relative_to(cache_dir() / "models"):  # never delete outside the cache
            shutil.rmtree(path, ignore_errors=True)
        file.unlink(missing_ok=True)
        removed.append(file.stem)
    if removed:
        logger.info("removed %d cached model copies (keeping %d)", len(removed), keep)
    return removed


def record_verdict(scorer: Scorer, path: str) -> None:
    """Remember that ``scorer``'s fast path agreed with ``pyfunc.predict`` for these files."""
    from lifecycle.base.digest import model_digest

    if scorer.fast is None:
        return
    save_fastpath_verdict(
        model_digest(path),
        VERDICT_KIND,
        {
            "method": scorer.fast.method,
            "batchable": scorer.fast.batchable,
            "columns": list(scorer.fast.columns),
            "v2_inputs": [list(c) for c in scorer.v2_columns()],
        },
    )


def lean_scorer(pin: Pin, sink: Any = None) -> Scorer | None:
    """A scorer for ``pin`` whose fast path needs no MLflow; None without a verdict for it.

    The general path (``pyfunc``) is attached later by :func:`attach_general`.
    """
    verdict = fastpath_verdict(pin.digest, VERDICT_KIND)
    if verdict is None:
        logger.info("no verified fast path for %s v%s yet: cold start", pin.name, pin.version)
        return None
    try:
        lean = load_lean_sklearn(pin.path)
    except Exception as exc:  # the cold path reports load errors with MLflow's wording
        logger.info("lean load of %s failed (%s): cold start", pin.path, exc)
        return None
    if lean is None:
        return None
    columns = tuple(c.name for c in lean.columns)
    if list(columns) != list(verdict.get("columns") or []):
        return None
    method = str(verdict.get("method", ""))
    if method.endswith("(compiled)"):
        program = numpy_program(lean.estimator, lean.method, len(columns))
        if program is None:
            return None
    elif method == lean.method:
        program = getattr(lean.estimator, lean.method)
    else:
        return None
    fast = FastPredictor(
        columns=columns, predict=program, method=method, batchable=bool(verdict.get("batchable"))
    )
    info = ModelInfo(**pin.info)
    scorer = Scorer(info=info, pyfunc_model=None, fast=fast, input_schema=None, sink=sink)
    if verdict.get("v2_inputs") is not None:
        scorer.v2_inputs = [(str(c), str(t)) for c, t in verdict["v2_inputs"]]
    scorer.general_ready.clear()
    logger.info(
        "warm start of %s v%s from %s (fast path %s)", pin.name, pin.version, pin.path, method
    )
    return scorer


def attach_general(scorer: Scorer, path: str) -> None:
    """Load the pyfunc model for ``scorer``'s general path (imports MLflow; seconds).

    On failure the general path answers 503 with the reason, the fast path keeps answering.
    """

    try:
        model = load_pyfunc(path, suppress_warnings=True)
    except Exception as exc:
        scorer.general_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        logger.error("general path unavailable: %s", scorer.general_error)
        scorer.general_ready.set()
        return
    scorer.pyfunc_model = model
    scorer.input_schema = model.metadata.get_input_schema()
    scorer.general_ready.set()
    logger.info("general path ready for %s", scorer.info.uri)


def registry_agrees(ws: Workspace, pin: Pin) -> tuple[bool, str]:
    """Whether the registry still has ``pin``'s version with the same source and digest.

    Raises:
        ModelNotFoundError: the version is gone.
        RestrictedVersionError, UntrustedPickleError: it is restricted now, or its consent
            to unpickle was revoked (and no override was given).
    """
    from lifecycle.base.refs import ModelRef, resolve_model
    from lifecycle.base.workspaces import one_http_attempt

    # One attempt, bounded: the caller keeps serving and asks again later, rather than sit
    # in MLflow's default retries (minutes) while /version says "pending".
    with one_http_attempt():
        resolved = resolve_model(ws, ModelRef(name=pin.name, version=pin.version))
    tags = dict(getattr(resolved.model_version, "tags", None) or {})
    # What a cold start would refuse, a warm one stops for once the registry says so.
    from lifecycle.base.consent import require_consent
    from lifecycle.base.restrict import require_unrestricted

    require_unrestricted(ws, pin.name, pin.version, tags, action="serve")
    require_consent(
        pin.path,
        recorded=tags.get(PICKLE_CONSENT_TAG),
        name=pin.name,
        version=pin.version,
        workspace=ws.name,
    )
    digest = tags.get(DIGEST_TAG)
    if resolved.source != pin.source:
        return False, f"source is now {resolved.source} (cached: {pin.source})"
    if digest != pin.registry_digest:
        return False, f"content digest is now {digest} (cached: {pin.registry_digest})"
    return True, "ok"


def drop_pin(ws: Workspace, pin: Pin) -> None:
    """Forget ``pin`` (the registry no longer confirms it): the next start is cold."""
    try:
        _pin_file(_key(ws, pin.name, pin.version)).unlink(missing_ok=True)
    except OSError as exc:
        logger.info("could not remove the cached pin of %s v%s: %s", pin.name, pin.version, exc)
