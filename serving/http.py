"""The HTTP/1.1 side of the scoring server: one :class:`Connection` per client parses
requests (keep-alive, ``Content-Length`` and chunked bodies, ``Expect: 100-continue``) one at
a time and writes the answers in order. What a request means is the app's business
(:class:`Dispatcher`).

Limits, each a ``lifecycle serve`` flag: a body larger than ``--max-body-bytes`` is answered
413; a client stops being read while its buffered bytes exceed that limit plus the largest
head, so bytes sent while a request is in flight cannot pile up; a request whose bytes take
longer than ``--header-timeout`` to arrive is answered 408 and closed (slow clients cannot
hold connections); an idle keep-alive connection is closed after ``--keepalive-timeout``; a
connection beyond ``--max-connections`` is answered 503 and closed at once.
"""

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
        #: When the first byte of the request being received arrived (None: none pending).
        self.request_began: float | None = None
        self.last_active = self.opened
        self.paused = False
        self.eof = False  # the client half-closed: answer what it sent, then close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        limit = getattr(self.app.options, "max_connections", 0)
        if limit and len(self.app.connections) >= limit:
            body = error_reply(
                503,
                "TEMPORARILY_UNAVAILABLE",
                f"Too many open connections (--max-connections {limit}); retry later",
            )
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body.body)}\r\nretry-after: 1\r\n".encode()
                + b"connection: close\r\n\r\n"
                + body.body
            )
            transport.close()
            self.transport = None
            return
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.transport = None

    def eof_received(self) -> bool:
        """The client will send nothing more: answer the whole requests it sent, then close
        (returning True keeps the transport open for the answers)."""
        self.eof = True
        if not self.busy:
            self._next()
            self._close_if_done()
        return True

    def _close_if_done(self) -> None:
        if self.eof and not self.busy and self.transport is not None:
            self.transport.close()

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
        if not self.buf and self.request_began is None:
            self.request_began = time.monotonic()
        self.buf += data
        if not self.busy:
            self._next()
        if len(self.buf) > self._buffer_cap() and self.transport is not None and not self.paused:
            # A request is in flight (or a body is still arriving): stop reading until the
            # buffer drains, so a client cannot make the server hold unbounded bytes.
            self.transport.pause_reading()
            self.paused = True

    def _buffer_cap(self) -> int:
        return int(self.app.options.max_body_bytes) + MAX_HEAD_BYTES + 64 * 1024

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
        limit = self.app.options.max_body_bytes
        expect = headers.get("expect", "").lower() == "100-continue"
        if "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                self._fail(
                    501,
                    f"Transfer-Encoding {headers['transfer-encoding'][:50]!r} is not supported: "
                    "send chunked or Content-Length",
                )
                return
            if expect and not self.continued and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.continued = True
            chunked = self._chunked_body(end + 4, limit)
            if chunked is None:
                return
            body, total = chunked
            self._dispatch(method, target, version, headers, body, total)
            return
        try:
            length = int(headers.get("content-length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self._fail(400, f"Invalid Content-Length {headers.get('content-length')!r}")
            return
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
        self._dispatch(method, target, version, headers, bytes(buf[end + 4 : total]), total)

    def _dispatch(
        self,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
        total: int,
    ) -> None:
        buf = self.buf
        self.continued = False
        del buf[:total]
        # A pipelined request already started arriving: its clock starts now.
        self.request_began = time.monotonic() if buf else None
        conn = headers.get("connection", "").lower()
        self.keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        self.busy = True
        self.started = time.perf_counter()
        self.route = target.split("?", 1)[0]
        self.app.dispatch(self, method, self.route, headers, body)

    def _chunked_body(self, start: int, limit: int) -> tuple[bytes, int] | None:
        """The decoded body of a chunked request whose head ends at ``start`` and the bytes
        it spans; None while incomplete or after answering an error."""
        buf = self.buf
        if buf.find(b"0\r\n", start) < 0:  # no last chunk yet: wait, unless it is too long
            if len(buf) - start > limit + 64 * 1024:
                self._too_large(limit)
            return None
        body = bytearray()
        pos = start
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
                if size < 0 or not size_text:
                    raise ValueError
            except ValueError:
                self._fail(400, f"Invalid chunk size {size_text[:20]!r} in a chunked body")
                return None
            if size == 0:
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    return bytes(body), eol + 4
                trailers_end = buf.find(b"\r\n\r\n", eol)
                return (bytes(body), trailers_end + 4) if trailers_end >= 0 else None
            if len(body) + size > limit:
                self._too_large(limit)
                return None
            data_end = eol + 2 + size
            if len(buf) < data_end + 2:
                return None
            if buf[data_end : data_end + 2] != b"\r\n":
                self._fail(400, "Malformed chunked body: a chunk is not followed by CRLF")
                return None
            body += buf[eol + 2 : data_end]
            pos = data_end + 2

    def _too_large(self, limit: int) -> None:
        self._fail(
            413,
            f"Request body exceeds the limit of {limit} bytes (--max-body-bytes); send fewer "
            "rows per request",
        )

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
        self.last_active = time.monotonic()
        app.request_done()
        if transport is None:
            return
        if self.paused and len(self.buf) <= self._buffer_cap():
            transport.resume_reading()
            self.paused = False
        if self.buf:
            self.request_began = time.monotonic()  # the next request's clock starts now
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
        else:
            self._close_if_done()

    def _resume(self) -> None:
        if not self.busy and self.transport is not None and self.buf:
            self._next()
        self._close_if_done()

    def check_timeouts(self, now: float) -> None:
        """Answer 408 to a request that is arriving too slowly; close an idle connection."""
        if self.busy or self.transport is None or self.discard:
            return
        options = self.app.options
        if self.request_began is not None and self.buf:
            if now - self.request_began > options.header_timeout:
                self._fail(
                    408,
                    f"The request did not arrive within {options.header_timeout:g} s "
                    "(--header-timeout)",
                )
        elif now - self.last_active > options.keepalive_timeout:
            self.transport.close()


def sweep_connections(app: Dispatcher) -> None:
    """Apply the timeouts to every connection, then again in half a second."""
    now = time.monotonic()
    for conn in list(app.connections):
        conn.check_timeouts(now)
    app.loop.call_later(0.5, sweep_connections, app)
