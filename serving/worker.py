"""One worker process of the scoring server: the listening socket, the event loop that
answers requests until SIGTERM/SIGINT, the registry follower beside it, and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
from typing import Any

from lifecycle.base.errors import ServingError
from serving.app import ScoringApp
from serving.fastpath import Scorer, load_scorer
from serving.follow import Follower, after_ready
from serving.http import Connection, sweep_connections
from serving.input_log import InputLog
from serving.options import ServeTarget
from serving.prepare import PreparedModel, model_dir

logger = logging.getLogger(__name__)

#: Seconds a stopping server waits for its post-start bookkeeping (cache, deployment record);
#: a cached copy left half-written fails its digest check and the next start is cold.
AFTER_READY_GRACE_S = 10.0


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
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


def limit_threads() -> None:
    # One-row predictions lose time to BLAS thread hand-offs; workers give parallelism.
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl is a scikit-learn dependency; tolerate its absence
        pass


def run_worker(
    target: ServeTarget,
    prepared: PreparedModel,
    *,
    reuse_port: bool = False,
    ready_fd: int | None = None,
    scorer: Scorer | None = None,
) -> None:
    """Load the prepared model and serve until SIGTERM/SIGINT (blocking).

    Raises:
        ServingError: the model fails to load or the port is taken.
    """
    options = target.options
    limit_threads()
    sink = InputLog(options.log_inputs) if options.log_inputs else None
    if scorer is None:
        scorer = load_scorer(prepared.path, prepared.info, sink)
    else:
        scorer.sink = sink
    # Millions of objects from MLflow's imports never die: freezing them keeps full garbage
    # collections (a few ms each, the p99 tail) off the request path.
    gc.collect()
    gc.freeze()
    sock = listen_socket(options.host, options.port, reuse_port)
    try:
        asyncio.run(_serve_loop(target, scorer, prepared, sock, ready_fd, sink))
    finally:
        sock.close()
        if sink is not None:
            sink.close()


async def _serve_loop(
    target: ServeTarget,
    scorer: Scorer,
    prepared: PreparedModel,
    sock: socket.socket,
    ready_fd: int | None,
    sink: Any,
) -> None:
    ws, options = target.ws, target.options
    loop = asyncio.get_running_loop()
    app = ScoringApp(scorer, options, loop)
    server = await loop.create_server(lambda: Connection(app), sock=sock, backlog=1024)
    sweep_connections(app)  # --header-timeout and --keepalive-timeout
    stop = asyncio.Event()
    app.stop_event = stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as stack:
        follower = None
        if ws is not None and prepared.follows and options.poll_interval > 0:
            follower = Follower(target, app, sink)
            follower.download_root = stack.enter_context(model_dir())
            follower.start()
        logger.info("serving %s on http://%s:%s", prepared.info.uri, options.host, options.port)
        if ready_fd is not None:
            os.write(ready_fd, b"READY\n")
            os.close(ready_fd)
        if options.metrics_dir:
            _snapshot_every_second(app, loop)
        # Bookkeeping after READY: MLflow's full client takes seconds to build.
        app.start = prepared.start
        app.registry_check = (
            "pending" if prepared.start == "warm" and target.ref.path is None else "ok"
        )
        download_root = stack.enter_context(model_dir())
        # A daemon thread, not the loop's executor (which shutdown joins without a limit).
        after = threading.Thread(
            target=after_ready,
            args=(target, app, prepared, sink, download_root),
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
        # Close the door before the last sweep: a connection the kernel completes between the
        # sweep and the close would be reset, so new SYNs are dropped first (the client retries
        # and finds another worker or a refused port) and handshakes already under way finish.
        if refuse_new_connections(sock):
            await asyncio.sleep(0.05)
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


#: A classic BPF program for SO_ATTACH_FILTER: drop TCP segments with SYN set (the filter
#: runs with the packet's data at the TCP header; byte 13 holds its flags), pass the rest.
_DROP_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]
    (0x45, 0, 1, 0x02),  # jset #SYN, next, skip
    (0x06, 0, 0, 0),  # ret #0 (drop)
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1 (pass)
)
_SO_ATTACH_FILTER = 26  # Linux


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make the listening ``sock`` drop new connection attempts while those the kernel has
    already begun still complete (Linux); False where the filter cannot be attached."""
    import ctypes
    import struct

    code = b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN)
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("HP", len(_DROP_SYN), ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)
    except OSError as exc:
        logger.debug("cannot attach the SYN filter: %s", exc)
        return False
    return True


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
        loop.create_task(loop.connect_accepted_socket(lambda: Connection(app), conn))
