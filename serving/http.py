"""The HTTP/1.1 side of the scoring server: one :class:`Connection` per client parses
requests (keep-alive, ``Content-Length`` bodies, ``Expect: 100-continue``, size limits) one
at a time and writes the answers in order. What a request means is the app's business
(:class:`Dispatcher`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from http import HTTPStatus
from typing import Any, Protocol

from serving.protocol import Reply, error_reply

MAX_HEAD_BYTES = 64 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class Dispatcher(Protocol):
    """What a connection needs of the app (:class:`serving.app.ScoringApp`)."""

    options: Any
    metrics: Any
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    in_flight: int
    idle: asyncio.Event
    draining: bool

    def dispatch(
        self, conn: Connection, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None: ...

    def request_done(self) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and writes answers in order."""

    def __init__(self, app: Dispatcher) -> None:
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
