"""A real Spark standalone cluster on 127.0.0.1 for the tests: a master and one worker (one
core) started with pyspark's own ``bin/spark-class``; the worker runs in its own mount
namespace (``unshare``) where the driver's temp folder is an empty tmpfs, as on another host.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def hiding_supported() -> str | None:
    """None when ``unshare`` can give a process its own mount namespace here, else why not."""
    if shutil.which("unshare") is None:
        return "no 'unshare' on PATH (util-linux)"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt && echo ok"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or "ok" not in probe.stdout:
        return f"unshare -rm cannot mount a tmpfs here: {probe.stderr.strip()[:200]}"
    return None


@dataclass
class Cluster:
    master_url: str
    procs: list[subprocess.Popen[bytes]]
    logs: Path
    hidden_listing: Path

    def worker_saw(self) -> list[str]:
        """What the worker's namespace lists in the driver's temp folder (must be nothing)."""
        return self.hidden_listing.read_text().split()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log_tail(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.glob("*.log"))
        )


def start_cluster(root: Path, hidden: Path, timeout: float = 120.0) -> Cluster:
    """Start a master and a one-core worker that cannot see ``hidden`` (the driver's temp)."""
    home = spark_home()
    spark_class = home / "bin" / "spark-class"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port, ui = free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_LOG_DIR": str(logs),
        "SPARK_PID_DIR": str(root),
    }
    env.pop("TMPDIR", None)
    master = subprocess.Popen(
        [str(spark_class), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        env=env, start_new_session=True,
        stdout=(logs / "master.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"spark://127.0.0.1:{port}"
    _wait_for(lambda: _listening(port), timeout, "the Spark master", logs)
    work = root / "worker-work"
    work.mkdir(exist_ok=True)
    listing = root / "worker-saw.txt"
    script = (
        'mount -t tmpfs none "$HIDE" && ls -A "$HIDE" > "$LISTING" && '
        'exec "$SPARK_CLASS" org.apache.spark.deploy.worker.Worker --cores 1 --memory 2g '
        '--work-dir "$WORK" --webui-port "$UI" "$URL"'
    )
    worker_env = {
        **env,
        "HIDE": str(hidden),
        "LISTING": str(listing),
        "SPARK_CLASS": str(spark_class),
        "WORK": str(work),
        "UI": str(free_port()),
        "URL": url,
    }
    worker = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script],
        env=worker_env, start_new_session=True,
        stdout=(logs / "worker.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    cluster = Cluster(url, [master, worker], logs, listing)
    try:
        _wait_for(
            lambda: "Successfully registered with master" in _read(logs / "worker.log"),
            timeout,
            "the Spark worker",
            logs,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(check: object, timeout: float, what: str, logs: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    tails = "\n".join(_read(p)[-2000:] for p in sorted(logs.glob("*.log")))
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s:\n{tails}")
