"""The scoring app: routes, the current model, micro-batching of fast-path requests, the
general path on a thread pool under ``--timeout``, model swaps and draining."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lifecycle.base.env_proxy import env_impl_of
from serving import v2
from serving.fastpath import Scorer
from serving.http import Connection
from serving.input_log import FastInput
from serving.metrics import Metrics
from serving.openapi import openapi_spec
from serving.options import ServeOptions
from serving.protocol import (
    CONTENT_TYPE_JSON,
    Reply,
    TooDeeplyNested,
    decode_json_object,
    error_reply,
    fast_rows,
    is_azure_payload,
    render_predictions,
)

logger = logging.getLogger(__name__)

#: How a fast-path answer is written: MLflow's or Azure's payload, or a V2 ``infer``.
Wrap = str | v2.FastInfer

_OPEN_ROUTES = ("/ping", "/health")
_GET_ROUTES = frozenset({"/ping", "/health", "/version", "/metrics", "/openapi.json", "/openapi"})
_FIRST_REQUEST_GRACE = 3.0
#: Fast-path inputs up to this many rows are predicted on the event loop (microseconds to
#: a few ms); larger ones run in the scoring pool under --timeout.
FAST_INLINE_ROWS = 1024


#: Scoring threads for a model that runs in its own environment (see ScoringApp).
ENV_MODEL_THREADS = 32


class ScoringApp:
    """The routes, the current model, micro-batching and the in-flight bookkeeping."""

    def __init__(
        self, scorer: Scorer, options: ServeOptions, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.scorer = scorer
        self.options = options
        self.loop = loop
        self.metrics = Metrics()
        self.connections: set[Connection] = set()
        threads = options.threads
        if env_impl_of(scorer.pyfunc_model) is not None:
            # The model runs in a worker of its own environment: these threads mostly wait
            # for it, and the more requests wait together, the more go into one call.
            threads = max(threads, ENV_MODEL_THREADS)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="score")
        self.pending: list[tuple[Scorer, np.ndarray, Wrap, Connection]] = []
        self.flush_scheduled = False
        self.in_flight = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.idle.set()
        self._key = (options.api_key or "").encode()
        self.openapi = json.dumps(openapi_spec(scorer)).encode()
        #: ``warm`` (local cache) or ``cold`` (through the registry), for ``/version``.
        self.start = "cold"
        #: ``ok``, ``pending`` or what went wrong when the registry was asked after a warm start.
        self.registry_check = "ok"
        #: Set from any thread to stop serving (after in-flight requests) and exit 1 with it.
        self.fatal: str | None = None
        self.stop_event: asyncio.Event | None = None

    def fail(self, message: str) -> None:
        """Stop serving (in-flight requests finish) and make the process exit 1 with ``message``."""
        self.fatal = message
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)

    # ---- routing
    def dispatch(
        self, conn: Connection, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        self.in_flight += 1
        self.idle.clear()
        if self._key and path not in _OPEN_ROUTES and not self._authorized(headers):
            conn.respond(
                error_reply(
                    401,
                    "UNAUTHENTICATED",
                    "Missing or wrong API key: send 'Authorization: Bearer <key>'",
                ),
                "www-authenticate: Bearer\r\n",
            )
            return
        if path == "/invocations":
            if method != "POST":
                conn.respond(error_reply(405, "BAD_REQUEST", "Use POST for /invocations"))
                return
            self.invocations(conn, headers.get("content-type"), body)
            return
        if path == "/v2" or path.startswith("/v2/"):
            self._v2(conn, method, path, headers, body)
            return
        if path not in _GET_ROUTES:
            # An unknown path is 404 whatever the method (405 only for a known route).
            conn.respond(
                error_reply(
                    404,
                    "ENDPOINT_NOT_FOUND",
                    f"No route {path}. Routes: /invocations, /ping, /health, /version, "
                    "/metrics, /openapi.json, /v2/...",
                )
            )
            return
        if method != "GET":
            conn.respond(error_reply(405, "BAD_REQUEST", f"Use GET for {path}"))
        elif path in ("/ping", "/health"):
            conn.respond(Reply(200, b"\n"))
        elif path == "/version":
            doc = {
                **self.scorer.info.to_dict(),
                "fast_path": self.scorer.fast is not None,
                "start": self.start,
                "registry_check": self.registry_check,
                "general_path": _general_state(self.scorer),
            }
            conn.respond(Reply(200, json.dumps(doc).encode()))
        elif path == "/metrics":
            metrics, workers = self.metrics.combined(self.options.metrics_dir)
            text = metrics.render(self.scorer.info, workers)
            conn.respond(Reply(200, text.encode(), "text/plain; version=0.0.4"))
        elif path in ("/openapi.json", "/openapi"):
            conn.respond(Reply(200, self.openapi))
        else:
            conn.respond(
                error_reply(
                    404,
                    "ENDPOINT_NOT_FOUND",
                    f"No route {path}. Routes: /invocations, /ping, /health, /version, "
                    "/metrics, /openapi.json, /v2/...",
                )
            )

    def _v2(
        self, conn: Connection, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        """The Open Inference Protocol routes (:mod:`serving.v2`)."""
        scorer = self.scorer
        name = scorer.info.name or "model"
        version = None if scorer.info.version is None else str(scorer.info.version)
        route = v2.route(path)
        if route is None:
            conn.respond(v2.error(404, f"No V2 route {path}"))
            return
        asked_name, asked_version, op = route
        if asked_name is None:  # server-level: health and metadata
            if method != "GET":
                conn.respond(v2.error(405, f"Use GET for {path}"))
            else:
                conn.respond(v2.ok(v2.SERVER_DOCS[op]))
            return
        if asked_name != name or (asked_version is not None and asked_version != version):
            served = f"'{name}'" + (f" version {version}" if version else "")
            asked = f"'{asked_name}'" + (f" version {asked_version}" if asked_version else "")
            conn.respond(
                v2.error(404, f"Model {asked} is not served here; this server serves {served}")
            )
            return
        wanted = "POST" if op == "/infer" else "GET"
        if method != wanted:
            conn.respond(v2.error(405, f"Use {wanted} for {path}"))
        elif not op:
            outputs = None
            if scorer.pyfunc_model is not None:
                outputs = scorer.pyfunc_model.metadata.get_output_schema()
            conn.respond(v2.ok(v2.model_metadata(name, version, scorer.v2_columns(), outputs)))
        elif op == "/ready":
            ready = scorer.fast is not None or scorer.general_ready.is_set()
            conn.respond(v2.ok({"name": name, "ready": ready}))
        else:
            if scorer.fast is not None:
                found = v2.fast_request(body, scorer.columns)  # the usual body, typed
                if found is not None:
                    self._queue_fast(conn, scorer, found[0], v2.FastInfer(name, found[1], body))
                    return
            try:
                obj = decode_json_object(body)
            except TooDeeplyNested as exc:
                conn.respond(v2.error(400, str(exc)))
                return
            if obj is None:
                conn.respond(v2.error(400, "The body is not a JSON object"))
                return
            if scorer.fast is not None:
                matrix = v2.fast_matrix(obj, scorer.columns)
                if matrix is not None:
                    wrap = v2.FastInfer(name, obj.get("id"), body)
                    self._queue_fast(conn, scorer, matrix, wrap)
                    return
            self._offload(conn, scorer, scorer.v2_infer, name, obj)

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._key)

    def request_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self.idle.set()

    # ---- scoring
    def invocations(self, conn: Connection, content_type: str | None, body: bytes) -> None:
        scorer = self.scorer
        obj = None
        if content_type is not None and content_type.split(";")[0].strip() == CONTENT_TYPE_JSON:
            try:
                obj = decode_json_object(body)
            except TooDeeplyNested as exc:
                conn.respond(error_reply(400, "BAD_REQUEST", str(exc)))
                return
        if obj is not None:
            if scorer.fast is not None and content_type == CONTENT_TYPE_JSON:
                found = fast_rows(obj, body, scorer.columns)
                if found is not None:
                    self._queue_fast(conn, scorer, found[0], found[1])
                    return
            if is_azure_payload(obj):
                self._offload(conn, scorer, scorer.azure, obj["input_data"], obj.get("params"))
                return
        self._offload(conn, scorer, scorer.general, body, content_type)

    def _queue_fast(self, conn: Connection, scorer: Scorer, matrix: np.ndarray, wrap: Wrap) -> None:
        """Queue a fast-path request; this loop turn's queue is scored together."""
        self.pending.append((scorer, matrix, wrap, conn))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Answer every fast-path request queued in this loop turn, stacked where allowed."""
        self.flush_scheduled = False
        items, self.pending = self.pending, []
        limit = self.options.max_batch_rows
        start = 0
        while start < len(items):
            scorer = items[start][0]
            assert scorer.fast is not None
            end = start + 1
            rows = len(items[start][1])
            if scorer.fast.batchable:
                while (
                    end < len(items)
                    and items[end][0] is scorer
                    and rows + len(items[end][1]) <= limit
                ):
                    rows += len(items[end][1])
                    end += 1
            self._predict_group(items[start:end], rows)
            start = end

    def _predict_group(
        self, group: list[tuple[Scorer, np.ndarray, Wrap, Connection]], rows: int
    ) -> None:
        scorer = group[0][0]
        matrix = group[0][1] if len(group) == 1 else np.concatenate([g[1] for g in group])
        if rows > FAST_INLINE_ROWS:
            # Big inputs leave the event loop, so --timeout holds and other requests go on.
            self.loop.create_task(self._predict_group_offloaded(group, matrix, rows))
            return
        try:
            preds = scorer.predict_fast(matrix)
        except Exception:
            self._fast_fallback(group)
            return
        self._answer_group(group, preds, rows)

    def _fast_fallback(self, group: list[tuple[Scorer, np.ndarray, Wrap, Connection]]) -> None:
        # Numeric input in signature order that the estimator refuses: let MLflow's path
        # produce its exact error for each request.
        for scorer, mat, wrap, conn in group:
            self._offload_fast_fallback(conn, scorer, mat, wrap)

    async def _predict_group_offloaded(
        self,
        group: list[tuple[Scorer, np.ndarray, Wrap, Connection]],
        matrix: np.ndarray,
        rows: int,
    ) -> None:
        scorer = group[0][0]
        timeout = self.options.timeout
        future = self.loop.run_in_executor(self.pool, scorer.predict_fast, matrix)
        try:
            preds = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            for _s, _m, wrap, conn in group:
                reply = _deadline_reply(timeout)
                if isinstance(wrap, v2.FastInfer):
                    reply = v2.error(504, json.loads(reply.body)["message"])
                conn.respond(reply, f"x-model-version: {scorer.info.version or ''}\r\n")
            return
        except Exception:
            self._fast_fallback(group)
            return
        self._answer_group(group, preds, rows)

    def _answer_group(
        self, group: list[tuple[Scorer, np.ndarray, Wrap, Connection]], preds: Any, rows: int
    ) -> None:
        scorer = group[0][0]
        self.metrics.observe_batch(rows)
        header = f"x-model-version: {scorer.info.version or ''}\r\n"
        offset = 0
        for _s, mat, wrap, conn in group:
            n = len(mat)
            part = preds if len(group) == 1 else preds[offset : offset + n]
            offset += n
            self.metrics.fast += 1
            if isinstance(wrap, v2.FastInfer):
                reply = v2.fast_infer_reply(wrap.name, scorer.info.version, wrap.sent_id, part)
            else:
                reply = Reply(200, render_predictions(part, wrap))
            conn.respond(reply, header)
            if scorer.sink is not None:
                scorer.sink(FastInput(mat, scorer.columns), part, scorer.info)

    def _offload_fast_fallback(
        self, conn: Connection, scorer: Scorer, matrix: np.ndarray, wrap: Wrap
    ) -> None:
        import pandas as pd

        if isinstance(wrap, v2.FastInfer):
            # The body decoded before (fast_request's msgspec accepts only valid JSON).
            obj = decode_json_object(wrap.body)
            self._offload(conn, scorer, scorer.v2_infer, wrap.name, obj)
            return

        frame = pd.DataFrame(matrix, columns=list(scorer.columns))
        if wrap == "azure":
            payload = {"columns": list(scorer.columns), "data": frame.values.tolist()}
            self._offload(conn, scorer, scorer.azure, payload, None)
        else:
            body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
            self._offload(conn, scorer, scorer.general, body, CONTENT_TYPE_JSON)

    def _offload(self, conn: Connection, scorer: Scorer, fn: Any, *args: Any) -> None:
        self.loop.create_task(self._run_offloaded(conn, scorer, fn, *args))

    async def _run_offloaded(self, conn: Connection, scorer: Scorer, fn: Any, *args: Any) -> None:
        timeout = self.options.timeout
        future = self.loop.run_in_executor(self.pool, fn, *args)
        try:
            reply = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            reply = _deadline_reply(timeout)
        except Exception as exc:  # the scorer answers errors itself; this is a bug guard
            logger.exception("scoring failed")
            reply = error_reply(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
        self.metrics.general += 1
        conn.respond(reply, f"x-model-version: {scorer.info.version or ''}\r\n")

    # ---- model swap and shutdown
    def swap(self, scorer: Scorer) -> None:
        """Answer new requests with ``scorer``; requests already queued keep the old one."""
        old = self.scorer
        self.scorer = scorer
        self.openapi = json.dumps(openapi_spec(scorer)).encode()
        logger.info("now serving version %s (was %s)", scorer.info.version, old.info.version)

    async def drain(self) -> None:
        """Wait for in-flight requests (bounded by ``drain_seconds``), then close connections."""
        self.draining = True
        deadline = self.loop.time() + self.options.drain_seconds
        # Let connections accepted at the last moment read the request they already sent.
        await asyncio.sleep(0.05)
        while self.connections and self.loop.time() < deadline:
            now = time.monotonic()
            for conn in list(self.connections):
                # A connection that has not sent its first request yet gets a grace period:
                # its client connected before the listener closed and is about to send.
                fresh = conn.served == 0 and now - conn.opened < _FIRST_REQUEST_GRACE
                if not conn.busy and not conn.buf and not fresh and conn.transport is not None:
                    conn.transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.idle.wait(), max(0.01, deadline - self.loop.time()))
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _deadline_reply(timeout: float) -> Reply:
    """The 504 answer of a request that ran past ``--timeout``."""
    return error_reply(
        504,
        "DEADLINE_EXCEEDED",
        f"Request processing time exceeded the limit of {timeout:g} s (--timeout)",
    )


def _general_state(scorer: Scorer) -> str:
    if not scorer.general_ready.is_set():
        return "loading"
    return "ready" if scorer.pyfunc_model is not None else f"failed: {scorer.general_error}"
