"""Start and stop a real ``mlflow server`` on 127.0.0.1 (tests, benchmarks, the demo).

MLflow 3 starts background job consumers in the server's process group, so the server is
started in a new session and stopped as a whole group (shared/reference/formats.md §2).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

from lifecycle.base.errors import WorkspaceError

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def premigrate_sqlite(db_path: Path) -> None:
    """Create and migrate a SQLite tracking database in-process.

    A fresh ``mlflow server`` spends most of its start-up on migrations; doing them first
    (in this already-warm process) lets the server answer sooner.
    """
    from mlflow.store.model_registry.sqlalchemy_store import (
        SqlAlchemyStore as RegistryStore,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db_path.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db_path.resolve()}"
    SqlAlchemyStore(uri, str(db_path.parent / "artifacts"))
    RegistryStore(uri)


class MlflowServer:
    """A real ``mlflow server`` with a SQLite backend and proxied artifacts under ``root``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, root: Path, port: int | None = None, workers: int = 1) -> None:
        self.root = Path(root).resolve()
        self.port = port or free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "server.log"

    def start(self, timeout: float = 180.0, premigrate: bool = True) -> MlflowServer:
        """Start the server and wait until ``/health`` answers.

        Raises:
            WorkspaceError: it exited or did not answer within ``timeout`` seconds.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        db = self.root / "mlflow.db"
        if premigrate and not db.exists():
            premigrate_sqlite(db)
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [
            str(mlflow_bin) if mlflow_bin.exists() else "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise WorkspaceError(
                    f"mlflow server on port {self.port} exited with code "
                    f"{self.proc.returncode}: {tail.strip().splitlines()[-1:] or ''}"
                )
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    logger.info("mlflow server ready at %s", self.url)
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise WorkspaceError(f"mlflow server on port {self.port} did not answer in {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            self.proc = None
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                # Give the rest of the group a moment, then make sure it is gone.
                time.sleep(0.2)
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        self.proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
