"""``lifecycle serve`` as a background process: started, waited for until it says READY on
a pipe, and stopped with SIGTERM. Used by the demo and by anything that needs a running
server for a while (tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle.base.errors import ServingError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
