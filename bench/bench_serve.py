"""Benchmark: ``lifecycle serve`` against ``mlflow models serve`` on the same model, same run.

The model is the baseline's: a scikit-learn ``LogisticRegression`` on 20 float features
(``f0``..``f19``) with a signature, registered in a throw-away SQLite workspace. Both
servers run on 127.0.0.1 with the same number of workers; wrk sends one-row
``dataframe_split`` requests with keep-alive. Measured: time to ready (process start to the
first 200 on /health or /ping, each server started alone), throughput at 1 and 16
connections, p50/p99 at 1 connection. Ratios are what to read: the machine is shared.

Time to ready is compared like for like, each best of two, alternating: both servers given
``models:/bench_lr/1`` (resolved in the same SQLite registry; MLflow through
``MLFLOW_TRACKING_URI``), and both given the model directory. Ours from ``models:/`` is
measured *cold* (empty cache, or ``--no-cache``: resolve in the registry, which runs in a
child process while the server imports scikit-learn and MLflow, then load and verify the
fast path against pyfunc) and *warm* (a previous start of the same pinned version left its
verified local copy: the registry is asked after /health is ready). The cache lives in the
benchmark's own temp folder, so the first start is truly cold.

Usage::

    python -m bench.bench_serve [--duration 10] [--workers 1] [--json out.json]

Needs ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

N_FEATURES = 20
COLUMNS = [f"f{i}" for i in range(N_FEATURES)]
ROW = [round(0.05 * i - 0.4, 3) for i in range(N_FEATURES)]
BODY = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [ROW]}})


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_model(root: Path) -> Path:
    """Train, save and register the LogisticRegression; return the model directory."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from lifecycle.base.workspaces import local_workspace
    from lifecycle.registry.versions import log_and_register

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, N_FEATURES)), columns=COLUMNS)
    y = (X.f0 + X.f1 - X.f2 > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    path = root / "model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(X, model.predict(X)),
        input_example=X.head(2),
        pip_requirements=["scikit-learn"],
    )
    ws = local_workspace("dev", root / ".lifecycle")
    log_and_register(ws, path, "bench_lr", experiment="bench")
    return path


class Proc:
    """A server process in its own process group, with its time to ready."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        url: str,
        probe: str,
        cwd: Path,
        log: Path,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        self.name, self.url = name, url
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        env.update(env_extra or {})
        if port_open(url):
            raise SystemExit(f"{name}: {url} is already taken by another process")
        self.stopped = False
        self.t0 = time.monotonic()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.ready_s = self._wait(probe, log)

    def _wait(self, probe: str, log: Path, timeout: float = 300.0) -> float:
        while time.monotonic() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {log.read_text()[-1500:]}")
            try:
                if requests.get(self.url + probe, timeout=1).status_code == 200:
                    return time.monotonic() - self.t0
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{self.name} was not ready within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server's whole process group and wait until its port is closed.

        A server's worker processes can outlive its main process for a moment: the next
        server started on the same port must not have its /ping answered by them.
        """
        if self.stopped:  # its port may be another server's by now
            return
        self.stopped = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        deadline = time.monotonic() + 10
        while port_open(self.url):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.1)


def port_open(url: str) -> bool:
    """Whether something accepts connections at ``url``'s host and port."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parsed.hostname or "127.0.0.1", parsed.port or 80)) == 0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(
    url: str, connections: int, duration: int, script: Path, path: str = "/invocations"
) -> dict[str, Any]:
    """One bounded wrk run against ``url + path``; requests/s, p50/p99 in ms, and
    non-2xx/socket errors."""
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url + path,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "connections": connections,
        "rps": rps,
        "requests": int(total.group(1)) if total else 0,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=1, help="workers of both servers")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: apt-get update && apt-get install -y wrk (Debian/Ubuntu)",
            file=sys.stderr,
        )
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    script = root / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = '{BODY}'\n",
        encoding="utf-8",
    )
    model_dir = build_model(root)
    bin_dir = Path(sys.executable).parent
    port, port2 = free_port(), free_port()
    from lifecycle.base.workspaces import local_workspace

    dev = local_workspace("dev", root / ".lifecycle")
    registry_env = {
        "MLFLOW_TRACKING_URI": dev.tracking_uri,
        "MLFLOW_REGISTRY_URI": dev.registry_uri,
    }

    def mlflow_server(uri: str | None = None) -> Proc:
        """MLflow's server on the model directory, or on ``uri`` resolved in the registry."""
        cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri or str(model_dir)]
        cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(args.workers)]
        return Proc(
            "mlflow models serve",
            cmd,
            f"http://127.0.0.1:{port}",
            "/ping",
            root,
            root / "mlflow.log",
            env_extra=registry_env if uri else None,
        )

    cache = root / "cache"
    os.environ["LIFECYCLE_CACHE_DIR"] = str(cache)

    def our_server(*extra: str, uri: str = "models:/bench_lr/1") -> Proc:
        cmd = [sys.executable, "-m", "lifecycle", "serve", uri, "-w", "dev"]
        cmd += ["--port", str(port2), "--workers", str(args.workers), "--no-record", *extra]
        return Proc(
            "lifecycle serve", cmd, f"http://127.0.0.1:{port2}", "/health", root, root / "ours.log"
        )

    def started_as(proc: Proc) -> str:
        return str(requests.get(proc.url + "/version", timeout=10).json().get("start"))

    procs: list[Proc] = []
    try:
        # Time to ready: each server alone, twice, alternating; the best of each counts.
        # Like for like: both servers on the registered version (models:/bench_lr/1, resolved
        # in the same SQLite registry), and both on the model directory itself.
        ready: dict[str, list[float]] = {
            "mlflow": [],
            "mlflow_registry": [],
            "ours_cold": [],
            "ours_warm": [],
            "ours_dir": [],
        }

        def timed(key: str, proc: Proc) -> Proc:
            procs.append(proc)
            ready[key].append(proc.ready_s)
            return proc

        for i in range(2):
            timed("mlflow", mlflow_server()).stop()
            timed("mlflow_registry", mlflow_server("models:/bench_lr/1")).stop()
            timed("ours_dir", our_server(uri=str(model_dir))).stop()
            proc = timed("ours_cold", our_server() if i == 0 else our_server("--no-cache"))
            assert started_as(proc) == "cold", "expected a cold start"
            deadline = time.monotonic() + 120  # the pin is written just after ready
            while not list((cache / "pins").glob("*.json")) and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.stop()
            proc = timed("ours_warm", our_server())
            assert started_as(proc) == "warm", "expected a warm start"
            proc.stop()
        # Both up for the load runs (interleaved, so machine noise hits both alike).
        ours, theirs = our_server(), mlflow_server()
        procs += [ours, theirs]
        headers = {"Content-Type": "application/json"}
        a = requests.post(ours.url + "/invocations", data=BODY, headers=headers, timeout=30)
        b = requests.post(theirs.url + "/invocations", data=BODY, headers=headers, timeout=30)
        if a.content != b.content:
            raise SystemExit(f"answers differ: ours {a.text!r} vs mlflow {b.text!r}")
        results: dict[str, Any] = {"ours": {}, "mlflow": {}}
        for conns in (1, 16):
            for key, proc in (("ours", ours), ("mlflow", theirs)):
                run_wrk(proc.url, conns, 2, script)  # warm-up
                results[key][conns] = run_wrk(proc.url, conns, args.duration, script)
        results["ready_s"] = {k: min(v) for k, v in ready.items()}
        results["ready_runs"] = ready
    finally:
        for p in procs:
            p.stop()
    report = summarize(results, args)
    print(report)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(root, ignore_errors=True)
    return 0


def summarize(results: dict[str, Any], args: argparse.Namespace) -> str:
    """A markdown table of both servers and the ratios against the targets."""
    o, m = results["ours"], results["mlflow"]
    ready = results["ready_s"]
    lines = [
        f"workers={args.workers}, duration={args.duration}s per run, one-row dataframe_split, "
        f"LogisticRegression on {N_FEATURES} floats",
        "",
        "| server | ready (s) | req/s @1 | p50 @1 (ms) | p99 @1 (ms) | req/s @16 | p50 @16 (ms) | p99 @16 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r, rd in (
        (
            "lifecycle serve",
            o,
            f"{ready['ours_cold']:.1f} cold / {ready['ours_warm']:.1f} warm (models:/), "
            f"{ready['ours_dir']:.1f} (dir)",
        ),
        (
            "mlflow models serve",
            m,
            f"{ready['mlflow_registry']:.1f} (models:/), {ready['mlflow']:.1f} (dir)",
        ),
    ):
        lines.append(
            f"| {name} | {rd} | {r[1]['rps']:.0f} | {r[1]['p50_ms']:.2f} | {r[1]['p99_ms']:.2f} "
            f"| {r[16]['rps']:.0f} | {r[16]['p50_ms']:.2f} | {r[16]['p99_ms']:.2f} |"
        )
    ratio16 = o[16]["rps"] / m[16]["rps"]
    ratio1 = o[1]["rps"] / m[1]["rps"]
    # Like for like: the same URI given to both servers.
    pairs = {
        "cold start, models:/ (first start of a version, or --no-cache)": (
            ready["ours_cold"],
            ready["mlflow_registry"],
        ),
        "warm start, models:/ (a restart, or a --prepare-only machine)": (
            ready["ours_warm"],
            ready["mlflow_registry"],
        ),
        "model directory": (ready["ours_dir"], ready["mlflow"]),
    }
    ready_lines = [
        f"- time to ready, {label}: {ours_s:.1f} s vs {theirs_s:.1f} s = {ours_s / theirs_s:.2f} "
        f"(target <= 0.5) {'MET' if ours_s / theirs_s <= 0.5 else 'MISSED'}"
        for label, (ours_s, theirs_s) in pairs.items()
    ]
    errors = [
        f"{k}@{c}: {r[c]['non_2xx']} non-2xx {r[c]['socket_errors']}".strip()
        for k, r in (("ours", o), ("mlflow", m))
        for c in (1, 16)
        if r[c]["non_2xx"] or r[c]["socket_errors"]
    ]
    lines += [
        "",
        f"- throughput ratio @16 connections: {ratio16:.1f}x (target >= 20x) "
        f"{'MET' if ratio16 >= 20 else 'MISSED'}",
        f"- throughput ratio @1 connection: {ratio1:.1f}x",
        f"- p50 @1: {o[1]['p50_ms']:.2f} ms (target <= 1 ms) {'MET' if o[1]['p50_ms'] <= 1 else 'MISSED'}; "
        f"p99 @1: {o[1]['p99_ms']:.2f} ms (target <= 5 ms) {'MET' if o[1]['p99_ms'] <= 5 else 'MISSED'}",
        *ready_lines,
        f"- errors: {'; '.join(errors) or 'none'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
