"""Real ``lifecycle`` processes for the reliability tests: started together at a barrier,
or one at a time with a fault injected at a named step (``$LIFECYCLE_TEST_FAULT``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: A CLI run that waits at a barrier (a file appearing) before it starts, so that all
#: processes hit the registry together.
_AT_BARRIER = r"""
import os, sys, time
import mlflow, mlflow.tracking  # imported before the barrier: the processes start together
from lifecycle.cli import main
from lifecycle.registry import promote, stages
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.002)
sys.argv = ["lifecycle", *sys.argv[2:]]
main()
"""


def together(
    cwd: Path, commands: list[list[str]], fault: str | None = None, wait: float = 8.0
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``lifecycle`` with each argument list, all released at the same instant."""
    go = cwd / f"go-{time.monotonic_ns()}"
    env = {**os.environ, **({"LIFECYCLE_TEST_FAULT": fault} if fault else {})}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_BARRIER, str(go), *cmd],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    time.sleep(wait)  # every process has imported and is waiting at the barrier
    go.write_text("go")
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def lifecycle(
    cwd: Path,
    *args: str,
    fault: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """One ``lifecycle`` process (its real entry point), with an optional injected fault."""
    env = {**os.environ, **(env or {})}
    env.pop("LIFECYCLE_TEST_FAULT", None)
    if fault:
        env["LIFECYCLE_TEST_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kill_after_first_file(proc: Any, checkpoint: Path, timeout: float = 300.0) -> int:
    """SIGKILL ``proc``'s whole process group (a scoring driver and its JVM) once its
    checkpoint says the first input file is done; the checkpoint's ``file_index`` then."""
    import json
    import signal

    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists() and json.loads(checkpoint.read_text())["file_index"] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return int(json.loads(checkpoint.read_text())["file_index"])
