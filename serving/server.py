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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle.errors import ServingError
from lifecycle.workspaces import Workspace
from serving.fastpath import ModelInfo, Scorer, load_scorer
from serving.input_log import FastInput, InputLog
from serving.protocol import (
    CONTENT_TYPE_JSON,
    Reply,
    decode_json_object,
    error_reply,
    fast_rows,
    is_azure_payload,
    render_predictions,
)

logger = logging.getLogger(__name__)

API_KEY_ENV = "LIFECYCLE_SERVE_API_KEY"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_OPEN_ROUTES = ("/ping", "/health")
_FIRST_REQUEST_GRACE = 3.0
#: Seconds a stopping server waits for its post-start bookkeeping (cache, deployment record);
#: a cached copy left half-written fails its digest check and the next start is cold.
AFTER_READY_GRACE_S = 10.0
#: Fast-path inputs up to this many rows are predicted on the event loop (microseconds to
#: a few ms); larger ones run in the scoring pool under --timeout.
FAST_INLINE_ROWS = 1024


@dataclass
class ServeOptions:
    """How the server runs (every field has a CLI option of ``lifecycle serve``)."""

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    timeout: float = 60.0
    log_inputs: str | None = None
    poll_interval: float = 30.0
    max_batch_rows: int = 4096
    drain_seconds: float = 30.0
    record: bool = True
    #: With ``record``: also record the start itself (False in a worker whose supervisor
    #: records the start, so that the worker records only the versions it swaps in).
    record_start: bool = True
    threads: int = 4
    cache: bool = True
    #: With several workers: the folder where each writes its counters, so /metrics on any
    #: worker reports the whole server.
    metrics_dir: str | None = None


# --------------------------------------------------------------------------- metrics


class Metrics:
    """Prometheus counters and histograms of one server process."""

    LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = [0] * (len(self.LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches = [0] * (len(self.BATCH_BUCKETS) + 1)
        self.batch_sum = 0
        self.fast = 0
        self.general = 0

    def observe(self, route: str, status: int, seconds: float | None) -> None:
        """Count one answered request (and its latency for /invocations)."""
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            self.latency[_bucket(self.LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def observe_batch(self, rows: int) -> None:
        """Count one model call of ``rows`` rows."""
        self.batches[_bucket(self.BATCH_BUCKETS, rows)] += 1
        self.batch_sum += rows

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-friendly data (for other workers' /metrics)."""
        return {
            "requests": [[r, s, n] for (r, s), n in self.requests.items()],
            "latency": self.latency,
            "latency_sum": self.latency_sum,
            "batches": self.batches,
            "batch_sum": self.batch_sum,
            "fast": self.fast,
            "general": self.general,
        }

    def add(self, snap: dict[str, Any]) -> None:
        """Add another worker's :meth:`snapshot` to these counters."""
        for route, status, n in snap.get("requests", []):
            key = (str(route), int(status))
            self.requests[key] = self.requests.get(key, 0) + int(n)
        for mine, theirs in ((self.latency, snap["latency"]), (self.batches, snap["batches"])):
            for i, n in enumerate(theirs[: len(mine)]):
                mine[i] += int(n)
        self.latency_sum += float(snap["latency_sum"])
        self.batch_sum += int(snap["batch_sum"])
        self.fast += int(snap["fast"])
        self.general += int(snap["general"])

    def write_snapshot(self, folder: str) -> None:
        """Write this process's counters to ``folder/<pid>.json`` (atomically)."""
        path = Path(folder) / f"{os.getpid()}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:  # metrics must never break serving
            logger.debug("could not write metrics snapshot %s: %s", path, exc)

    def combined(self, folder: str | None) -> tuple[Metrics, int]:
        """These counters plus every other worker's last snapshot in ``folder``, and the
        number of workers counted."""
        if not folder:
            return self, 1
        total = Metrics()
        total.add(self.snapshot())
        workers = 1
        mine = f"{os.getpid()}.json"
        for path in Path(folder).glob("*.json"):
            if path.name == mine:
                continue
            try:
                total.add(json.loads(path.read_text(encoding="utf-8")))
                workers += 1
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return total, workers

    def render(self, info: ModelInfo, workers: int = 1) -> str:
        """The Prometheus text exposition."""
        labels = f'model="{info.name or info.uri}",version="{info.version or ""}"'
        out = [
            "# HELP lifecycle_requests_total Requests answered, by route and status.",
            "# TYPE lifecycle_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'lifecycle_requests_total{{route="{route}",status="{status}"}} {n}')
        errors = sum(n for (_r, s), n in self.requests.items() if s >= 400)
        out += [
            "# HELP lifecycle_request_errors_total Requests answered with status >= 400.",
            "# TYPE lifecycle_request_errors_total counter",
            f"lifecycle_request_errors_total {errors}",
            "# HELP lifecycle_predictions_total /invocations answers by path.",
            "# TYPE lifecycle_predictions_total counter",
            f'lifecycle_predictions_total{{path="fast"}} {self.fast}',
            f'lifecycle_predictions_total{{path="general"}} {self.general}',
        ]
        out += _histogram(
            "lifecycle_request_latency_seconds",
            "Latency of /invocations from request parsed to answer written.",
            self.LATENCY_BUCKETS,
            self.latency,
            self.latency_sum,
        )
        out += _histogram(
            "lifecycle_batch_rows",
            "Rows per model call (micro-batches stack concurrent requests).",
            self.BATCH_BUCKETS,
            self.batches,
            float(self.batch_sum),
        )
        out += [
            "# HELP lifecycle_model_info The model version that answers.",
            "# TYPE lifecycle_model_info gauge",
            f"lifecycle_model_info{{{labels}}} 1",
            "# HELP lifecycle_workers Worker processes whose counters these figures add up.",
            "# TYPE lifecycle_workers gauge",
            f"lifecycle_workers {workers}",
        ]
        return "\n".join(out) + "\n"


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def _histogram(
    name: str, help_text: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    for bound, n in zip(bounds, counts, strict=False):
        running += n
        out.append(f'{name}_bucket{{le="{bound}"}} {running}')
    running += counts[-1]
    out += [
        f'{name}_bucket{{le="+Inf"}} {running}',
        f"{name}_sum {total}",
        f"{name}_count {running}",
    ]
    return out


# --------------------------------------------------------------------------- HTTP


class _Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and writes answers in order."""

    def __init__(self, app: ScoringApp) -> None:
        self.app = app
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.keep_alive = True
        self.started = 0.0
        self.route = ""
        self.discard = 0
        self.discard_reply: Reply | None = None
        self.served = 0
        self.opened = time.monotonic()
        self.continued = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.discard:
            # Read (and drop) an oversized body so the client sees the 413, not a reset.
            take = min(self.discard, len(data))
            self.discard -= take
            data = data[take:]
            if self.discard == 0 and self.discard_reply is not None:
                reply, self.discard_reply = self.discard_reply, None
                self.respond(reply)
            return
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self._fail(431, "Request headers are larger than 64 KiB")
            return
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._fail(400, f"Malformed request line {lines[0][:100]!r}")
            return
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._fail(411, "Chunked request bodies are not supported: send Content-Length")
            return
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._fail(400, f"Invalid Content-Length {headers.get('content-length')!r}")
            return
        limit = self.app.options.max_body_bytes
        expect = headers.get("expect", "").lower() == "100-continue"
        if length > limit:
            message = (
                f"Request body of {length} bytes exceeds the limit of {limit} bytes "
                "(--max-body-bytes); send fewer rows per request"
            )
            already = len(buf) - (end + 4)
            if expect or already >= length or length > 64 * limit:
                self._fail(413, message)
                return
            del buf[:]
            self.discard = length - already
            self.discard_reply = error_reply(413, "BAD_REQUEST", message)
            self.keep_alive = False
            self.busy = True
            self.route = "-"
            self.started = time.perf_counter()
            self.app.in_flight += 1
            self.app.idle.clear()
            return
        total = end + 4 + length
        if len(buf) < total:
            if expect and not self.continued and self.transport is not None:
                # curl and others wait (1 s) for this before sending a large body.
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.continued = True
            return
        self.continued = False
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        conn = headers.get("connection", "").lower()
        self.keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        self.busy = True
        self.started = time.perf_counter()
        self.route = target.split("?", 1)[0]
        self.app.dispatch(self, method, self.route, headers, body)

    def _fail(self, status: int, message: str) -> None:
        self.keep_alive = False
        self.busy = True
        self.route = "-"
        self.started = time.perf_counter()
        self.app.in_flight += 1
        self.respond(error_reply(status, "BAD_REQUEST", message))

    def respond(self, reply: Reply, extra: str = "") -> None:
        """Write ``reply`` and continue with the next buffered request (if any)."""
        app = self.app
        app.metrics.observe(
            self.route,
            reply.status,
            time.perf_counter() - self.started if self.route == "/invocations" else None,
        )
        transport = self.transport
        self.busy = False
        self.served += 1
        app.request_done()
        if transport is None:
            return
        keep = self.keep_alive and not app.draining
        closing = "" if keep else "connection: close\r\n"
        head = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\n"
            f"content-type: {reply.content_type}\r\n"
            f"content-length: {len(reply.body)}\r\n"
            f"{extra}{closing}\r\n"
        )
        transport.write(head.encode("latin-1") + reply.body)
        if not keep:
            transport.close()
        elif self.buf:
            app.loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self.busy and self.transport is not None and self.buf:
            self._next()


class ScoringApp:
    """The routes, the current model, micro-batching and the in-flight bookkeeping."""

    def __init__(
        self, scorer: Scorer, options: ServeOptions, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.scorer = scorer
        self.options = options
        self.loop = loop
        self.metrics = Metrics()
        self.connections: set[_Connection] = set()
        self.pool = ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="score")
        self.pending: list[tuple[Scorer, np.ndarray, str, _Connection]] = []
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
        self, conn: _Connection, method: str, path: str, headers: dict[str, str], body: bytes
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
                    "/metrics, /openapi.json",
                )
            )

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
    def invocations(self, conn: _Connection, content_type: str | None, body: bytes) -> None:
        scorer = self.scorer
        obj = None
        if content_type is not None and content_type.split(";")[0].strip() == CONTENT_TYPE_JSON:
            obj = decode_json_object(body)
        if obj is not None:
            if scorer.fast is not None and content_type == CONTENT_TYPE_JSON:
                found = fast_rows(obj, body, scorer.columns)
                if found is not None:
                    self.pending.append((scorer, found[0], found[1], conn))
                    if not self.flush_scheduled:
                        self.flush_scheduled = True
                        self.loop.call_soon(self.flush)
                    return
            if is_azure_payload(obj):
                self._offload(conn, scorer, scorer.azure, obj["input_data"], obj.get("params"))
                return
        self._offload(conn, scorer, scorer.general, body, content_type)

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
        self, group: list[tuple[Scorer, np.ndarray, str, _Connection]], rows: int
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

    def _fast_fallback(self, group: list[tuple[Scorer, np.ndarray, str, _Connection]]) -> None:
        # Numeric input in signature order that the estimator refuses: let MLflow's path
        # produce its exact error for each request.
        for scorer, mat, wrap, conn in group:
            self._offload_fast_fallback(conn, scorer, mat, wrap)

    async def _predict_group_offloaded(
        self,
        group: list[tuple[Scorer, np.ndarray, str, _Connection]],
        matrix: np.ndarray,
        rows: int,
    ) -> None:
        scorer = group[0][0]
        timeout = self.options.timeout
        future = self.loop.run_in_executor(self.pool, scorer.predict_fast, matrix)
        try:
            preds = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            reply = _deadline_reply(timeout)
            for _s, _m, _w, conn in group:
                conn.respond(reply, f"x-model-version: {scorer.info.version or ''}\r\n")
            return
        except Exception:
            self._fast_fallback(group)
            return
        self._answer_group(group, preds, rows)

    def _answer_group(
        self, group: list[tuple[Scorer, np.ndarray, str, _Connection]], preds: Any, rows: int
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
            conn.respond(Reply(200, render_predictions(part, wrap)), header)
            if scorer.sink is not None:
                scorer.sink(FastInput(mat, scorer.columns), part, scorer.info)

    def _offload_fast_fallback(
        self, conn: _Connection, scorer: Scorer, matrix: np.ndarray, wrap: str
    ) -> None:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=list(scorer.columns))
        if wrap == "azure":
            payload = {"columns": list(scorer.columns), "data": frame.values.tolist()}
            self._offload(conn, scorer, scorer.azure, payload, None)
        else:
            body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
            self._offload(conn, scorer, scorer.general, body, CONTENT_TYPE_JSON)

    def _offload(self, conn: _Connection, scorer: Scorer, fn: Any, *args: Any) -> None:
        self.loop.create_task(self._run_offloaded(conn, scorer, fn, *args))

    async def _run_offloaded(self, conn: _Connection, scorer: Scorer, fn: Any, *args: Any) -> None:
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


def openapi_spec(scorer: Scorer) -> dict[str, Any]:
    """An OpenAPI 3 description of the routes (inputs named from the model's signature)."""
    columns = list(scorer.columns) or []
    row = {"type": "array", "items": {}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"Scoring server for {scorer.info.name or scorer.info.uri}",
            "version": str(scorer.info.version or "local"),
        },
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Predict (MLflow scoring protocol, or Azure ML's input_data).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {
                                            "type": "object",
                                            "required": ["dataframe_split"],
                                            "properties": {
                                                "dataframe_split": {
                                                    "type": "object",
                                                    "properties": {
                                                        "columns": {
                                                            "type": "array",
                                                            "example": columns,
                                                        },
                                                        "data": {"type": "array", "items": row},
                                                    },
                                                },
                                                "params": {"type": "object"},
                                            },
                                        },
                                        {"type": "object", "required": ["dataframe_records"]},
                                        {"type": "object", "required": ["instances"]},
                                        {"type": "object", "required": ["inputs"]},
                                        {"type": "object", "required": ["input_data"]},
                                    ]
                                }
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": '{"predictions": [...]} (Azure input_data: bare JSON)'
                        },
                        "400": {"description": "Bad input (MLflow error JSON)"},
                        "401": {"description": "Missing or wrong API key"},
                        "413": {"description": "Body larger than --max-body-bytes"},
                        "415": {"description": "Unsupported content type"},
                        "504": {"description": "Slower than --timeout"},
                    },
                }
            },
            "/ping": {"get": {"responses": {"200": {"description": "Model loaded"}}}},
            "/health": {"get": {"responses": {"200": {"description": "Model loaded"}}}},
            "/version": {"get": {"responses": {"200": {"description": "Model version info"}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
        },
    }


# --------------------------------------------------------------------------- model loading


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


def prepare_model(ws: Workspace, model_uri: str, dst: str | Path | None = None) -> PreparedModel:
    """Resolve ``model_uri`` in ``ws`` and download that version to ``dst`` (a temp dir).

    Raises:
        ModelNotFoundError: the model, version, stage or alias does not exist.
        ServingError: the artifacts cannot be downloaded.
    """
    from lifecycle.uris import resolve_model
    from lifecycle.workspaces import use_workspace

    resolved = resolve_model(ws, model_uri)
    ref = resolved.ref
    digest = None
    if resolved.model_version is not None:
        digest = (resolved.model_version.tags or {}).get("lifecycle.content_digest")
    info = ModelInfo(
        name=resolved.name,
        version=resolved.version,
        uri=str(ref),
        stage=resolved.stage if resolved.stage not in (None, "None") else None,
        alias=ref.alias,
        digest=digest,
        workspace=ws.name,
    )
    local_source = _local_model_dir(resolved.source)
    downloaded = False
    if ref.path is not None:
        path = str(ref.path)
    elif local_source is not None:
        path = local_source  # a local artifact store: load in place, nothing to copy
    else:
        downloaded = True
        import mlflow.artifacts

        target = Path(dst or tempfile.mkdtemp(prefix="lifecycle-serve-"))
        try:
            with use_workspace(ws):
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=resolved.pinned_uri, dst_path=str(target)
                )
        except Exception as exc:
            raise ServingError(
                f"Cannot download {resolved.pinned_uri} from workspace '{ws.name}': {exc}".splitlines()[
                    0
                ]
            ) from exc
    if info.digest is None:
        from lifecycle.digest import model_digest

        info = ModelInfo(**{**info.to_dict(), "digest": model_digest(path)})
    return PreparedModel(
        path=path,
        info=info,
        follows=ref.follows_registry,
        source=resolved.source if ref.path is None else None,
        downloaded=downloaded,
    )


def _local_model_dir(source: str | None) -> str | None:
    """The local directory of a version's ``file:`` (or plain path) source, if it is one."""
    if not source:
        return None
    from urllib.parse import unquote, urlparse

    parsed = urlparse(source)
    if parsed.scheme == "file":
        candidate = Path(unquote(parsed.path))
    elif parsed.scheme == "" and source.startswith("/"):
        candidate = Path(source)
    else:
        return None
    return str(candidate) if (candidate / "MLmodel").is_file() else None


class _Follower(threading.Thread):
    """Polls the registry for a stage/alias/latest URI and swaps in a new version."""

    def __init__(
        self, ws: Workspace, model_uri: str, app: ScoringApp, options: ServeOptions, sink: Any
    ) -> None:
        super().__init__(name="stage-follower", daemon=True)
        self.ws, self.model_uri, self.app, self.options, self.sink = (
            ws,
            model_uri,
            app,
            options,
            sink,
        )
        self.stopped = threading.Event()
        self.download_root: str | None = None

    def run(self) -> None:
        from lifecycle.uris import resolve_model

        while not self.stopped.wait(self.options.poll_interval):
            try:
                resolved = resolve_model(self.ws, self.model_uri)
                if resolved.version == self.app.scorer.info.version:
                    continue
                logger.info(
                    "%s now points at version %s: loading", self.model_uri, resolved.version
                )
                dst = tempfile.mkdtemp(prefix="lifecycle-serve-", dir=self.download_root)
                prepared = prepare_model(self.ws, self.model_uri, dst)
                scorer = load_scorer(prepared.path, prepared.info, self.sink)
                self.app.loop.call_soon_threadsafe(self.app.swap, scorer)
                _record(self.ws, prepared.info, self.options)
            except Exception as exc:  # keep serving the current version
                logger.warning("stage-following check failed: %s", exc)


def _after_ready(
    ws: Workspace | None,
    model_uri: str,
    app: ScoringApp,
    prepared: PreparedModel,
    options: ServeOptions,
    sink: Any,
    download_root: str,
) -> None:
    """What waits until ``/health`` is ready: the general path and registry check of a warm
    start, the cache entries of a cold one, and the deployment record."""
    from serving.warmstart import attach_general

    try:
        if prepared.start == "warm":
            attach_general(app.scorer, prepared.path)
            if ws is not None and prepared.pin is not None:
                _confirm_warm_start(ws, model_uri, app, prepared, options, sink, download_root)
        elif ws is not None and options.cache:
            _remember(ws, prepared, app.scorer)
    except Exception as exc:  # bookkeeping must not take the server down
        logger.warning("post-start checks failed: %s", exc)
    stopping = app.stop_event is not None and app.stop_event.is_set()
    if not app.fatal and not stopping and options.record_start:
        _record(ws, app.scorer.info, options)


def _confirm_warm_start(
    ws: Workspace,
    model_uri: str,
    app: ScoringApp,
    prepared: PreparedModel,
    options: ServeOptions,
    sink: Any,
    download_root: str,
) -> None:
    """Ask the registry about a warm-started version until it answers.

    Same source and digest: done. Different: load the registry's version and swap it in.
    Gone: stop serving and exit 1, as a start of a missing version does. Unreachable: keep
    serving the verified copy and ask again every ``poll_interval`` (30 s if 0).
    """
    from lifecycle.errors import ModelNotFoundError
    from serving.warmstart import drop_pin, registry_agrees

    assert prepared.pin is not None
    while True:
        try:
            agrees, why = registry_agrees(ws, prepared.pin)
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
    fresh = prepare_model(ws, model_uri, tempfile.mkdtemp(prefix="swap-", dir=download_root))
    scorer = load_scorer(fresh.path, fresh.info, sink)
    app.loop.call_soon_threadsafe(app.swap, scorer)
    app.registry_check = f"replaced the cached copy: {why}"
    if options.cache:
        _remember(ws, fresh, scorer)


def _remember(ws: Workspace, prepared: PreparedModel, scorer: Scorer) -> None:
    """Cache a cold start's resolution and fast-path verdict for the next (warm) start."""
    from serving.warmstart import record_verdict, save_pin

    if prepared.info.version is None:
        return
    record_verdict(scorer, prepared.path)
    save_pin(ws, prepared.path, prepared.info, prepared.source, prepared.downloaded)


def _cached_pin(ws: Workspace, model_uri: str) -> Any:
    """The warm-start cache's pin for a pinned-version URI (files matching their digest)."""
    from lifecycle.uris import parse_model_uri
    from serving.warmstart import load_pin

    try:
        ref = parse_model_uri(model_uri)
    except Exception:
        return None
    if ref.name is None or ref.version is None:
        return None
    return load_pin(ws, ref.name, ref.version)


class _PrepareChild:
    """:func:`prepare_model` run in a child process (``python -m serving.server --child``).

    :meth:`result` returns its :class:`PreparedModel`, or raises the error it raised (same
    class, same message). Leaving the context kills a child still running.
    """

    def __init__(self, ws: Workspace, model_uri: str, dst: str) -> None:
        from lifecycle.child import ChildCall, workspace_spec

        spec = {"workspace": workspace_spec(ws), "model_uri": model_uri, "dst": dst}
        self.call = ChildCall("serving.server", spec, ServingError, "Resolving the model")

    def __enter__(self) -> _PrepareChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.call.__exit__(*exc)

    def result(self) -> PreparedModel:
        """The child's prepared model (waits for it).

        Raises:
            LifecycleError: what ``prepare_model`` raised in the child (ModelNotFoundError,
                ServingError, ...), or ServingError when the child died without saying.
        """
        p = self.call.result()
        return PreparedModel(
            path=p["path"],
            info=ModelInfo(**p["info"]),
            follows=p["follows"],
            source=p["source"],
            downloaded=p["downloaded"],
        )


def _prepare_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``--child`` side of :class:`_PrepareChild`."""
    ws = Workspace(**spec["workspace"])
    prepared = prepare_model(ws, spec["model_uri"], spec["dst"])
    return {
        "path": prepared.path,
        "info": prepared.info.to_dict(),
        "follows": prepared.follows,
        "source": prepared.source,
        "downloaded": prepared.downloaded,
    }


def _warm_start(pin: Any, sink: Any) -> tuple[PreparedModel, Scorer] | None:
    """A prepared model and scorer from the local cache for ``pin``, or None."""
    from serving.warmstart import lean_scorer

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
    )
    return prepared, scorer


def _record(ws: Workspace | None, info: ModelInfo, options: ServeOptions) -> None:
    if ws is None or not options.record or info.name is None or info.version is None:
        return
    from lifecycle.deployments import record_deployment
    from lifecycle.workspaces import one_http_attempt

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


# --------------------------------------------------------------------------- running


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServingError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _limit_threads() -> None:
    # One-row predictions lose time to BLAS thread hand-offs; workers give parallelism.
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl is a scikit-learn dependency; tolerate its absence
        pass


def run_worker(
    ws: Workspace | None,
    model_uri: str,
    prepared: PreparedModel,
    options: ServeOptions,
    *,
    reuse_port: bool = False,
    ready_fd: int | None = None,
    scorer: Scorer | None = None,
) -> None:
    """Load the prepared model and serve until SIGTERM/SIGINT (blocking).

    Raises:
        ServingError: the model fails to load or the port is taken.
    """
    _limit_threads()
    sink = InputLog(options.log_inputs) if options.log_inputs else None
    if scorer is None:
        scorer = load_scorer(prepared.path, prepared.info, sink)
    else:
        scorer.sink = sink
    # Millions of objects from MLflow's imports never die: freezing them keeps full garbage
    # collections (a few ms each, the p99 tail) off the request path.
    gc.collect()
    gc.freeze()
    sock = _listen_socket(options.host, options.port, reuse_port)
    try:
        asyncio.run(_serve_loop(ws, model_uri, scorer, prepared, options, sock, ready_fd, sink))
    finally:
        sock.close()
        if sink is not None:
            sink.close()


async def _serve_loop(
    ws: Workspace | None,
    model_uri: str,
    scorer: Scorer,
    prepared: PreparedModel,
    options: ServeOptions,
    sock: socket.socket,
    ready_fd: int | None,
    sink: Any,
) -> None:
    loop = asyncio.get_running_loop()
    app = ScoringApp(scorer, options, loop)
    server = await loop.create_server(lambda: _Connection(app), sock=sock, backlog=1024)
    stop = asyncio.Event()
    app.stop_event = stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as stack:
        follower = None
        if ws is not None and prepared.follows and options.poll_interval > 0:
            follower = _Follower(ws, model_uri, app, options, sink)
            follower.download_root = stack.enter_context(_model_dir())
            follower.start()
        logger.info("serving %s on http://%s:%s", prepared.info.uri, options.host, options.port)
        if ready_fd is not None:
            os.write(ready_fd, b"READY\n")
            os.close(ready_fd)
        if options.metrics_dir:
            _snapshot_every_second(app, loop)
        # Bookkeeping after READY: MLflow's full client takes seconds to build.
        app.start = prepared.start
        app.registry_check = "pending" if prepared.start == "warm" and ws is not None else "ok"
        download_root = stack.enter_context(_model_dir())
        # A daemon thread, not the loop's executor (which shutdown joins without a limit).
        after = threading.Thread(
            target=_after_ready,
            args=(ws, model_uri, app, prepared, options, sink, download_root),
            name="after-ready",
            daemon=True,
        )
        after.start()
        await stop.wait()
        logger.info(
            "%s: finishing %d in-flight request(s)",
            "stopping" if app.fatal else "SIGTERM",
            app.in_flight,
        )
        _accept_backlog(sock, server, app, loop)
        server.close()
        if follower is not None:
            follower.stopped.set()
        await app.drain()
        if follower is not None:
            follower.join(timeout=10)
        after.join(timeout=AFTER_READY_GRACE_S)
        if after.is_alive():
            logger.info("stopping before the post-start bookkeeping finished")
    if app.fatal:
        raise ServingError(app.fatal)


def _snapshot_every_second(app: ScoringApp, loop: asyncio.AbstractEventLoop) -> None:
    assert app.options.metrics_dir is not None
    app.metrics.write_snapshot(app.options.metrics_dir)
    loop.call_later(1.0, _snapshot_every_second, app, loop)


def _accept_backlog(
    sock: socket.socket, server: asyncio.Server, app: ScoringApp, loop: asyncio.AbstractEventLoop
) -> None:
    """Take the connections the kernel already accepted, so none is reset at shutdown."""
    while True:
        try:
            conn, _addr = sock.accept()
        except (BlockingIOError, OSError):
            return
        conn.setblocking(False)
        loop.create_task(loop.connect_accepted_socket(lambda: _Connection(app), conn))


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
) -> None:
    """Serve ``model_uri`` (resolved in ``ws``) over HTTP until SIGTERM/SIGINT (blocking).

    See :func:`prepare_cache` for filling the warm-start cache without serving.

    Args:
        ws: the workspace the URI is resolved in (None only for a local model directory).
        model_uri: ``models:/NAME/N``, ``/Stage``, ``@alias``, ``/latest`` or a directory;
            stage, alias and latest URIs are followed (``poll_interval`` seconds, 0: off).
        workers: processes sharing the port (``SO_REUSEPORT``).
        api_key: require ``Authorization: Bearer KEY`` (default ``$LIFECYCLE_SERVE_API_KEY``).
        max_body_bytes: larger bodies are answered 413.
        timeout: seconds per request on the general path before answering 504.
        log_inputs: folder for Parquet logs of inputs and predictions.
        record: record the start on the model version (``lifecycle.deployments``).
        cache: start a pinned version from its verified local copy when a previous start
            left one (:mod:`serving.warmstart`), asking the registry once ready; False:
            always resolve and load through the registry first.

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
    )
    if ws is None and not Path(model_uri).is_dir():
        raise ServingError(f"A workspace is needed to resolve {model_uri}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Fail fast when the port is taken, before spending seconds on loading the model.
    _listen_socket(options.host, options.port, reuse_port=options.workers > 1).close()
    with _model_dir() as tmp, contextlib.ExitStack() as stack:
        pin = _cached_pin(ws, model_uri) if ws is not None and options.cache else None
        child = None
        if ws is not None and pin is None and (os.cpu_count() or 1) > 1:
            # Resolving and downloading (MLflow's import, its store) run in another process
            # while this one imports the model's libraries: a cold start's two longest steps
            # side by side instead of one after the other.
            child = stack.enter_context(_PrepareChild(ws, model_uri, tmp))
        # skops (scikit-learn models) scans every loaded module for its trusted types when
        # imported: importing it before MLflow's hundreds of modules makes that scan shorter.
        with contextlib.suppress(ImportError):
            import skops.io  # noqa: F401
        warm = _warm_start(pin, None) if pin is not None else None
        scorer = None
        if warm is not None:
            prepared, scorer = warm
        elif child is not None:
            # The fast path is checked against pyfunc: import it while the child resolves.
            with contextlib.suppress(ImportError):
                import mlflow.pyfunc  # noqa: F401
            prepared = child.result()
        elif ws is not None:
            prepared = prepare_model(ws, model_uri, tmp)
        else:
            prepared = PreparedModel(model_uri, ModelInfo(None, None, model_uri))
        if options.workers == 1:
            run_worker(
                ws, model_uri, prepared, options, ready_fd=_ready_fd_from_env(), scorer=scorer
            )
            return
        _run_workers(ws, model_uri, prepared, options, scorer)


def prepare_cache(ws: Workspace, model_uri: str) -> dict[str, Any]:
    """Resolve, download, load and verify a pinned version into the warm-start cache.

    For container images and deploy scripts: run it where the server will run, and the
    server's first start is warm.

    Returns:
        What was cached: name, version, path, digest, fast path method.

    Raises:
        InvalidArgumentError: the URI is not a pinned version (``models:/NAME/N``).
        ModelNotFoundError, ServingError: as for :func:`serve`.
    """
    from lifecycle.errors import InvalidArgumentError
    from lifecycle.uris import parse_model_uri
    from serving.warmstart import lean_scorer, load_pin

    ref = parse_model_uri(model_uri)
    if ref.name is None or ref.version is None:
        raise InvalidArgumentError(
            f"Cannot cache {model_uri}: only a pinned version (models:/NAME/N) is served warm; "
            "a stage, alias or latest URI is resolved at every start"
        )
    with contextlib.suppress(ImportError):
        import skops.io  # noqa: F401
    with _model_dir() as tmp:
        prepared = prepare_model(ws, model_uri, tmp)
        scorer = load_scorer(prepared.path, prepared.info)
        _remember(ws, prepared, scorer)
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


@contextlib.contextmanager
def _model_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="lifecycle-serve-") as tmp:
        yield tmp


def _ready_fd_from_env() -> int | None:
    value = os.environ.pop("_LIFECYCLE_SERVE_READY_FD", None)
    return int(value) if value else None


def _run_workers(
    ws: Workspace | None,
    model_uri: str,
    prepared: PreparedModel,
    options: ServeOptions,
    scorer: Scorer | None = None,
) -> None:
    """Start ``options.workers`` processes on one port and supervise them.

    A pinned version is loaded once here and the workers are forked from this process
    (copy-on-write: they start in milliseconds). A followed stage/alias needs registry
    access in every worker, which must not share this process's database connections, so
    those workers are fresh interpreters instead. A warm start (``scorer`` given) has not
    touched MLflow or the registry before forking, so each worker checks the registry itself
    once ready.
    """
    # Fail fast if the port is taken, before any worker loads the model.
    _listen_socket(options.host, options.port, reuse_port=True).close()
    with tempfile.TemporaryDirectory(prefix="lifecycle-metrics-") as metrics_dir:
        options = ServeOptions(**{**asdict(options), "metrics_dir": metrics_dir})
        _start_workers(ws, model_uri, prepared, options, scorer)


def _start_workers(
    ws: Workspace | None,
    model_uri: str,
    prepared: PreparedModel,
    options: ServeOptions,
    scorer: Scorer | None,
) -> None:
    if not prepared.follows or options.poll_interval <= 0:
        _limit_threads()
        warm = scorer is not None
        if scorer is None:
            scorer = load_scorer(prepared.path, prepared.info)
        gc.collect()
        gc.freeze()
        children: list[tuple[Any, int]] = []
        for _ in range(options.workers):
            rfd, wfd = os.pipe()
            worker_ws = ws if warm else None
            children.append(
                (_fork_worker(worker_ws, model_uri, prepared, options, scorer, wfd, rfd), rfd)
            )
            os.close(wfd)
        _supervise(ws, prepared, options, children, None if warm else scorer)
        return
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    for index in range(options.workers):
        # The supervisor records the start; the first worker records each version it
        # swaps in (every worker follows the registry on its own, to the same versions).
        worker_options = {**asdict(options), "record": options.record and index == 0}
        worker_options["record_start"] = False
        spec = json.dumps(
            {
                "workspace": _ws_to_dict(ws),
                "model_uri": model_uri,
                "prepared": {
                    "path": prepared.path,
                    "info": prepared.info.to_dict(),
                    "follows": prepared.follows,
                },
                "options": worker_options,
            }
        )
        rfd, wfd = os.pipe()
        env = {**os.environ, "_LIFECYCLE_SERVE_READY_FD": str(wfd)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--worker"],
            stdin=subprocess.PIPE,
            env=env,
            pass_fds=(wfd,),
        )
        os.close(wfd)
        assert proc.stdin is not None
        proc.stdin.write(spec.encode())
        proc.stdin.close()
        procs.append((proc, rfd))
    _supervise(ws, prepared, options, procs)


def _supervise(
    ws: Workspace | None,
    prepared: PreparedModel,
    options: ServeOptions,
    procs: list[tuple[Any, int]],
    cold_scorer: Scorer | None = None,
) -> None:
    """Wait for every worker's READY, then until SIGTERM (forwarded) or a worker's exit."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for proc, rfd in procs:
            with os.fdopen(rfd, "rb") as pipe:
                line = pipe.readline()
            if line.strip() != b"READY":
                raise ServingError(
                    f"A worker failed to start (exit code {proc.wait()}); see its error above"
                )
        ready_fd = _ready_fd_from_env()
        if ready_fd is not None:
            os.write(ready_fd, b"READY\n")
            os.close(ready_fd)
        if ws is not None and cold_scorer is not None and options.cache:
            try:
                _remember(ws, prepared, cold_scorer)
            except Exception as exc:  # only saves time on the next start
                logger.info("could not cache %s for warm starts: %s", prepared.info.uri, exc)
        _record(ws, prepared.info, options)
        while not stop.is_set() and all(p.poll() is None for p, _ in procs):
            stop.wait(0.5)
        failed = [p.poll() for p, _ in procs if p.poll()]
        if failed and not stop.is_set():
            raise ServingError(
                f"A worker stopped with exit code {failed[0]} (see its error above); "
                "stopping the others"
            )
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(timeout=options.drain_seconds + 5)
            except subprocess.TimeoutExpired:
                proc.kill()


class _ForkedWorker:
    """A forked worker process, with the part of ``Popen``'s interface the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.05)
        return int(self.returncode or 0)

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _fork_worker(
    ws: Workspace | None,
    model_uri: str,
    prepared: PreparedModel,
    options: ServeOptions,
    scorer: Scorer,
    ready_fd: int,
    parent_fd: int,
) -> _ForkedWorker:
    pid = os.fork()
    if pid:
        return _ForkedWorker(pid)
    code = 0
    try:  # the child: serve, then leave without running the parent's cleanup
        os.close(parent_fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        worker_options = ServeOptions(**{**asdict(options), "record": False})
        run_worker(
            ws,
            model_uri,
            prepared,
            worker_options,
            reuse_port=True,
            ready_fd=ready_fd,
            scorer=scorer,
        )
    except BaseException as exc:
        logger.error("Error: worker %s: %s", os.getpid(), exc)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def _ws_to_dict(ws: Workspace | None) -> dict[str, Any] | None:
    from lifecycle.child import workspace_spec

    return None if ws is None else workspace_spec(ws)


def _worker_main() -> None:
    spec = json.loads(sys.stdin.read())
    ws = Workspace(**spec["workspace"]) if spec["workspace"] else None
    p = spec["prepared"]
    prepared = PreparedModel(p["path"], ModelInfo(**p["info"]), p["follows"])
    options = ServeOptions(**spec["options"])
    try:
        run_worker(
            ws, spec["model_uri"], prepared, options, reuse_port=True, ready_fd=_ready_fd_from_env()
        )
    except ServingError as exc:
        logger.error("Error: %s", exc)
        sys.exit(1)


# --------------------------------------------------------------------------- background


@dataclass
class BackgroundServer:
    """A ``lifecycle serve`` process started by :func:`start_background`."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the server, wait for it to finish in-flight requests; return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stopped = True
        return int(self.process.returncode)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_background(
    model_uri: str,
    *,
    config_path: str | Path | None = None,
    workspace: str | None = None,
    port: int | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    log_path: str | Path | None = None,
    timeout: float = 120.0,
) -> BackgroundServer:
    """Run ``lifecycle serve MODEL_URI`` as a child process and wait until it is ready.

    Args:
        config_path, workspace: passed as ``--config`` / ``-w``.
        port: default a free port on 127.0.0.1.
        extra_args: more ``lifecycle serve`` options (``--api-key``, ``--workers``...).
        log_path: where the server's stderr goes (default: a temp file).

    Returns:
        A :class:`BackgroundServer` (``.url``, ``.stop()``; a context manager).

    Raises:
        ServingError: the process exited before it was ready (message: its last error line)
            or was not ready within ``timeout`` seconds.
    """
    from lifecycle.mlflow_server import free_port

    port = port or free_port()
    cmd = [sys.executable, "-m", "lifecycle"]
    if config_path:
        cmd += ["--config", str(config_path)]
    cmd += ["serve", model_uri, "--port", str(port)]
    if workspace:
        cmd += ["-w", workspace]
    cmd += extra_args or []
    log = (
        Path(log_path)
        if log_path
        else Path(tempfile.mkstemp(prefix="lifecycle-serve-", suffix=".log")[1])
    )
    rfd, wfd = os.pipe()
    child_env = {**os.environ, **(env or {}), "_LIFECYCLE_SERVE_READY_FD": str(wfd)}
    t0 = time.perf_counter()
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=err,
            stderr=err,
            env=child_env,
            cwd=cwd,
            pass_fds=(wfd,),
            start_new_session=True,
        )
    os.close(wfd)
    ready = _wait_ready(rfd, proc, timeout)
    if not ready:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = next(
            (ln for ln in reversed(lines) if ln.startswith("Error")), lines[-1] if lines else ""
        )
        raise ServingError(
            f"lifecycle serve {model_uri} did not start (exit code {proc.returncode}): {last}"
        )
    return BackgroundServer(
        url=f"http://127.0.0.1:{port}",
        process=proc,
        log_path=log,
        startup_seconds=time.perf_counter() - t0,
    )


def _wait_ready(rfd: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    import select

    deadline = time.monotonic() + timeout
    with os.fdopen(rfd, "rb", buffering=0) as pipe:
        data = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([pipe], [], [], 0.2)
            if readable:
                chunk = pipe.read(64)
                if not chunk:
                    return b"READY" in data
                data += chunk
                if b"READY" in data:
                    return True
            elif proc.poll() is not None:
                return False
    return False


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        _worker_main()
    elif sys.argv[1:] == ["--child"]:
        from lifecycle.child import child_main

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        child_main(_prepare_in_child, "ServingError")
