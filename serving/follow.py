"""What a server does beside answering requests: following a stage, alias or ``latest``
(poll the registry, load the new version beside the old one, swap between requests), and
the checks that wait until ``/health`` is ready (a warm start's general path and its
confirmation by the registry, a cold start's cache entries, the deployment record)."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from typing import Any

from lifecycle.base.workspaces import Workspace
from serving.app import ScoringApp
from serving.fastpath import load_scorer
from serving.options import ServeTarget
from serving.prepare import PreparedModel, prepare_model, record_start, remember

logger = logging.getLogger(__name__)


class Follower(threading.Thread):
    """Polls the registry for a stage/alias/latest URI and swaps in a new version."""

    def __init__(self, target: ServeTarget, app: ScoringApp, sink: Any) -> None:
        super().__init__(name="stage-follower", daemon=True)
        assert target.ws is not None
        self.ws: Workspace = target.ws
        self.ref = target.ref
        self.options = target.options
        self.app, self.sink = app, sink
        self.stopped = threading.Event()
        self.download_root: str | None = None

    def run(self) -> None:
        from lifecycle.base.refs import resolve_model

        while not self.stopped.wait(self.options.poll_interval):
            try:
                resolved = resolve_model(self.ws, self.ref)
                if resolved.version == self.app.scorer.info.version:
                    continue
                logger.info("%s now points at version %s: loading", self.ref, resolved.version)
                dst = tempfile.mkdtemp(prefix="lifecycle-serve-", dir=self.download_root)
                prepared = prepare_model(self.ws, self.ref, dst)
                scorer = load_scorer(prepared.path, prepared.info, self.sink)
                self.app.loop.call_soon_threadsafe(self.app.swap, scorer)
                record_start(self.ws, prepared.info, self.options)
            except Exception as exc:  # keep serving the current version
                logger.warning("stage-following check failed: %s", exc)


def after_ready(
    target: ServeTarget, app: ScoringApp, prepared: PreparedModel, sink: Any, download_root: str
) -> None:
    """What waits until ``/health`` is ready: the general path and registry check of a warm
    start, the cache entries of a cold one, and the deployment record."""
    from serving.warmstart import attach_general, record_verdict

    ws, options = target.ws, target.options
    try:
        if prepared.start == "warm":
            attach_general(app.scorer, prepared.path)
            if ws is not None and prepared.pin is not None and target.ref.path is None:
                confirm_warm_start(target, app, prepared, sink, download_root)
        elif target.ref.path is not None and options.cache:
            record_verdict(app.scorer, prepared.path)  # the next start of these files is warm
        elif ws is not None and options.cache:
            remember(ws, prepared, app.scorer)
    except Exception as exc:  # bookkeeping must not take the server down
        logger.warning("post-start checks failed: %s", exc)
    stopping = app.stop_event is not None and app.stop_event.is_set()
    if not app.fatal and not stopping and options.record_start:
        record_start(ws, app.scorer.info, options)


def confirm_warm_start(
    target: ServeTarget, app: ScoringApp, prepared: PreparedModel, sink: Any, download_root: str
) -> None:
    """Ask the registry about a warm-started version until it answers.

    Same source and digest: done. Different: load the registry's version and swap it in.
    Gone, restricted or without consent now: stop serving and exit 1, as a cold start of it
    would refuse. Unreachable: keep
    serving the verified copy and ask again every ``poll_interval`` (30 s if 0).
    """
    from lifecycle.base.errors import (
        ModelNotFoundError,
        RestrictedVersionError,
        UntrustedPickleError,
    )
    from serving.warmstart import drop_pin, registry_agrees

    ws, options = target.ws, target.options
    assert prepared.pin is not None and ws is not None
    while True:
        try:
            agrees, why = registry_agrees(ws, prepared.pin)
        except (RestrictedVersionError, UntrustedPickleError) as exc:
            app.registry_check = f"failed: {exc}".splitlines()[0]
            logger.error("%s: stopping the warm-started server", app.registry_check)
            app.fail(f"{exc}".splitlines()[0] + " (it was started from the local cache)")
            return
        except ModelNotFoundError as exc:
            drop_pin(ws, prepared.pin)
            app.registry_check = f"failed: {exc}".splitlines()[0]
            logger.error("%s: stopping the warm-started server", app.registry_check)
            app.fail(f"{exc}".splitlines()[0] + " (it was started from the local cache)")
            return
        except Exception as exc:  # registry down: keep serving the verified copy, retry
            app.registry_check = f"unreachable: {exc}".splitlines()[0]
            logger.error(
                "could not confirm %s in workspace '%s'; serving the verified cached copy and "
                "asking again: %s",
                prepared.info.uri,
                ws.name,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            deadline = time.monotonic() + (options.poll_interval or 30.0)
            while time.monotonic() < deadline:  # short naps: a shutdown must not wait for us
                if app.stop_event is not None and app.stop_event.is_set():
                    return
                time.sleep(0.2)
            continue
        break
    if agrees:
        app.registry_check = "ok"
        return
    logger.warning(
        "the registry's %s differs from the cached copy (%s): loading it", prepared.info.uri, why
    )
    fresh = prepare_model(ws, target.ref, tempfile.mkdtemp(prefix="swap-", dir=download_root))
    scorer = load_scorer(fresh.path, fresh.info, sink)
    app.loop.call_soon_threadsafe(app.swap, scorer)
    app.registry_check = f"replaced the cached copy: {why}"
    if options.cache:
        remember(ws, fresh, scorer)
