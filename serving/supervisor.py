"""Several worker processes on one port (``SO_REUSEPORT``): forked from a loaded model
(copy-on-write, milliseconds each) or, for a followed stage or alias, fresh interpreters
(``python -m serving.server --worker``); the supervisor waits for every READY, forwards
SIGTERM and stops the others when one dies."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from typing import Any

from lifecycle.base.errors import ServingError
from lifecycle.base.refs import parse_model_uri
from lifecycle.base.workspaces import Workspace
from serving.fastpath import ModelInfo, Scorer, load_scorer
from serving.options import ServeOptions, ServeTarget
from serving.prepare import PreparedModel, record_start, remember
from serving.worker import limit_threads, listen_socket, run_worker

logger = logging.getLogger(__name__)


def ready_fd_from_env() -> int | None:
    """The pipe a launcher passed (``_LIFECYCLE_SERVE_READY_FD``) to hear READY on, if any."""
    value = os.environ.pop("_LIFECYCLE_SERVE_READY_FD", None)
    return int(value) if value else None


def run_workers(target: ServeTarget, prepared: PreparedModel, scorer: Scorer | None = None) -> None:
    """Start ``options.workers`` processes on one port and supervise them.

    A pinned version is loaded once here and the workers are forked from this process
    (copy-on-write: they start in milliseconds). A followed stage/alias needs registry
    access in every worker, which must not share this process's database connections, so
    those workers are fresh interpreters instead. A warm start (``scorer`` given) has not
    touched MLflow or the registry before forking, so each worker checks the registry itself
    once ready.
    """
    options = target.options
    # Fail fast if the port is taken, before any worker loads the model.
    listen_socket(options.host, options.port, reuse_port=True).close()
    with tempfile.TemporaryDirectory(prefix="lifecycle-metrics-") as metrics_dir:
        options = ServeOptions(**{**asdict(options), "metrics_dir": metrics_dir})
        _start_workers(replace(target, options=options), prepared, scorer)


def _start_workers(target: ServeTarget, prepared: PreparedModel, scorer: Scorer | None) -> None:
    ws, options = target.ws, target.options
    if not prepared.follows or options.poll_interval <= 0:
        limit_threads()
        warm = scorer is not None
        if scorer is None:
            scorer = load_scorer(prepared.path, prepared.info)
        gc.collect()
        gc.freeze()
        children: list[tuple[Any, int]] = []
        for _ in range(options.workers):
            rfd, wfd = os.pipe()
            worker = replace(target, ws=ws if warm else None)
            children.append((_fork_worker(worker, prepared, scorer, wfd, rfd), rfd))
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
                "model_uri": str(target.ref),
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
        ready_fd = ready_fd_from_env()
        if ready_fd is not None:
            os.write(ready_fd, b"READY\n")
            os.close(ready_fd)
        if ws is not None and cold_scorer is not None and options.cache:
            try:
                remember(ws, prepared, cold_scorer)
            except Exception as exc:  # only saves time on the next start
                logger.info("could not cache %s for warm starts: %s", prepared.info.uri, exc)
        record_start(ws, prepared.info, options)
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
    target: ServeTarget,
    prepared: PreparedModel,
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
        worker_options = ServeOptions(**{**asdict(target.options), "record": False})
        run_worker(
            replace(target, options=worker_options),
            prepared,
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
    from lifecycle.base.child import workspace_spec

    return None if ws is None else workspace_spec(ws)


def worker_main() -> None:
    """The ``--worker`` side of a fresh-interpreter worker: its spec on stdin, then serve."""
    spec = json.loads(sys.stdin.read())
    ws = Workspace(**spec["workspace"]) if spec["workspace"] else None
    p = spec["prepared"]
    prepared = PreparedModel(p["path"], ModelInfo(**p["info"]), p["follows"])
    options = ServeOptions(**spec["options"])
    target = ServeTarget(ws, parse_model_uri(spec["model_uri"]), options)
    try:
        run_worker(target, prepared, reuse_port=True, ready_fd=ready_fd_from_env())
    except ServingError as exc:
        logger.error("Error: %s", exc)
        sys.exit(1)


# --------------------------------------------------------------------------- background
