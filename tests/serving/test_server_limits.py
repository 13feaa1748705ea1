"""The scoring server's connection limits, against a real ``lifecycle serve`` process over raw
sockets: chunked bodies, a client flooding while its request is in flight, slow requests
(408), idle keep-alive connections, and a cap on open connections (503)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from lifecycle.cli.background import BackgroundServer, start_background
from tests.support.serving_models import save_slow_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("limits")
    model = save_slow_model(root / "model", 1.0)
    srv = start_background(
        str(model),
        cwd=root,
        extra_args=[
            "--no-record", "--trust-pickle", "--max-body-bytes", "100000", "--header-timeout", "1.5",
            "--keepalive-timeout", "1", "--max-connections", "6", "--timeout", "30",
        ],
    )  # fmt: skip
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def _port(srv: BackgroundServer) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _row(sleep: float = 0.0) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": ["f0", "f1", "sleep"], "data": [[1.0, 2.0, sleep]]}}
    ).encode()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


HEAD = "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def test_chunked_body_is_answered_like_a_content_length_one(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(
            f"{HEAD}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
            + _chunked(_row(), 7)
        )
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
    assert answer.endswith(b'{"predictions": [3.0]}')


def test_chunked_body_over_the_limit_is_413(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(f"{HEAD}Transfer-Encoding: chunked\r\n\r\n".encode())
        sock.sendall(_chunked(b"x" * 150_000, 50_000)[:-5])  # no last chunk yet
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"100000 bytes (--max-body-bytes)" in answer


def test_bad_chunk_size_and_unknown_transfer_encoding(server: BackgroundServer) -> None:
    for encoding, body, status in (
        ("chunked", b"zz\r\nabc\r\n0\r\n\r\n", b"400"),
        ("gzip", b"", b"501"),
    ):
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
            sock.sendall(f"{HEAD}Transfer-Encoding: {encoding}\r\n\r\n".encode() + body)
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]


def test_a_flooding_client_is_not_read_while_its_request_runs(server: BackgroundServer) -> None:
    """While a 3 s request is in flight, the client sends 200 MB more: the server stops
    reading (its memory stays flat, the client's send blocks), then answers the request."""
    proc = psutil.Process(server.process.pid)

    def rss() -> int:  # the server and any worker process it started
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    before = rss()
    body = _row(sleep=3.0)
    sent = 0
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(f"{HEAD}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        sock.settimeout(0.2)
        junk = b"G" * 1_000_000
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and sent < 200_000_000:
            with contextlib.suppress(TimeoutError):  # full kernel buffers: not read
                sent += sock.send(junk)
        grown = rss() - before
        sock.settimeout(10)
        first = sock.recv(65536)
    assert sent < 50_000_000, f"the server kept reading: {sent} bytes accepted"
    assert grown < 30_000_000, f"the server's memory grew by {grown} bytes"
    assert first.startswith(b"HTTP/1.1 200 OK") and b'{"predictions": [3.0]}' in first


def test_a_request_arriving_too_slowly_is_408(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(HEAD.encode())  # ... and never the rest
        t0 = time.monotonic()
        answer = _read_all(sock)
        waited = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"1.5 s (--header-timeout)" in answer
    assert 1.2 < waited < 4.0


def test_an_idle_keepalive_connection_is_closed(server: BackgroundServer) -> None:
    body = _row()
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(f"{HEAD}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        t0 = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, not by us
        assert 0.8 < time.monotonic() - t0 < 3.0


def test_connections_beyond_the_cap_get_503(server: BackgroundServer) -> None:
    held = [socket.create_connection(("127.0.0.1", _port(server)), timeout=10) for _ in range(6)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as extra:
            answer = _read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"--max-connections 6" in answer
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        body = _row()
        sock.sendall(
            f"{HEAD}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        assert _read_all(sock).startswith(b"HTTP/1.1 200 OK")


def test_a_stopping_listener_drops_new_syns_but_keeps_accepted_connections() -> None:
    """The door a stopping worker closes before its last backlog sweep: a connection already
    accepted keeps working, a new attempt gets no handshake (so none can be reset at close)."""
    from serving.worker import listen_socket, refuse_new_connections

    sock = listen_socket("127.0.0.1", 0, reuse_port=False)
    sock.setblocking(True)
    port = sock.getsockname()[1]
    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        old = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        accepted, _ = sock.accept()
        stack.callback(accepted.close)
        assert refuse_new_connections(sock)
        old.sendall(b"still here")
        assert accepted.recv(10) == b"still here"
        with pytest.raises(TimeoutError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5)
