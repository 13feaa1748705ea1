"""The release controller against a real ``mlflow server`` as the source workspace (issue #17
item 8): a version registered there reaches staging through its gates within 10 s, once
through MLflow's own registry webhook (HMAC-signed, delivered by the server to the
controller's receiver) and once by polling; a forged delivery is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from lifecycle.base.workspaces import Config, load_config
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import save_logreg
from tests.support.mlflow_server import MlflowServer, free_port

SECRET = "s3cret-for-the-release-webhook"
pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    # What a team sets on its server to let it post to a controller on its own network.
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "1")
    srv = MlflowServer(tmp_path / "source-server").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def config(project_dir: Path, server: MlflowServer) -> Config:
    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump({"workspaces": {"dev": {"tracking_uri": server.url}, "staging": {}}})
    )
    (project_dir / "release.yaml").write_text(
        yaml.safe_dump(
            {
                "models": {
                    "churn": {
                        "source": "dev",
                        "hops": [
                            {
                                "name": "staging",
                                "to": "staging",
                                "stage": "Staging",
                                "gates": ["accuracy>=0.9"],
                            }
                        ],
                    }
                }
            }
        )
    )
    return load_config()


def _controller(project: Path, *args: str) -> subprocess.Popen[str]:
    """``lifecycle -v release run ARGS`` (its log on stderr shows each step's time)."""
    env = {**os.environ, "LIFECYCLE_WEBHOOK_SECRET": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "-v", "release", "run", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _staged(config: Config) -> list[str]:
    try:
        versions = config.get("staging").client().search_model_versions("name='churn'")
    except Exception:
        return []
    return [str(v.version) for v in versions if v.current_stage == "Staging"]


def _wait_for(proc: subprocess.Popen[str], text: str, timeout: float = 120) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"controller exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
    raise AssertionError(f"no '{text}' from the controller")


def _time_to_staging(config: Config, tmp_path: Path) -> float:
    dev = config.get("dev")
    model = save_logreg(tmp_path / "m")
    log_and_register(dev, model, "churn", experiment="t", metrics={"accuracy": 0.95})
    started = time.monotonic()  # the version exists in the source registry from here
    while time.monotonic() - started < 60 and _staged(config) != ["1"]:
        time.sleep(0.1)
    return time.monotonic() - started


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out + err


def test_a_webhook_from_the_source_server_moves_a_new_version_to_staging_within_10s(
    project_dir: Path, config: Config, server: MlflowServer, tmp_path: Path
) -> None:
    port = free_port()
    # Polling is slower than the test allows: only the webhook can be in time.
    proc = _controller(project_dir, "--poll-interval", "600", "--port", str(port))
    try:
        _wait_for(proc, f"webhook: 'dev' posts to http://127.0.0.1:{port}/webhook")
        hooks = config.get("dev").client().list_webhooks()
        assert [h.url for h in hooks] == [f"http://127.0.0.1:{port}/webhook"]
        _wait_for(proc, "ready: 1 model(s)")
        elapsed = _time_to_staging(config, tmp_path)
        forged = requests.post(
            f"http://127.0.0.1:{port}/webhook",
            data=b'{"entity": "model_version", "action": "created"}',
            headers={
                "X-MLflow-Delivery-Id": "x",
                "X-MLflow-Timestamp": str(int(time.time())),
                "X-MLflow-Signature": "v1,Zm9yZ2Vk",
            },
            timeout=10,
        )
    finally:
        out = _stop(proc)
    assert _staged(config) == ["1"], out
    assert elapsed < 10, f"took {elapsed:.1f}s: {out}"
    assert forged.status_code == 401
    assert "churn staging: dev v1 -> staging v1" in out


def test_polling_moves_a_new_version_to_staging_within_10s(
    project_dir: Path, config: Config, tmp_path: Path
) -> None:
    proc = _controller(project_dir, "--poll-interval", "1")
    try:
        _wait_for(proc, "ready: 1 model(s)")
        elapsed = _time_to_staging(config, tmp_path)
    finally:
        out = _stop(proc)
    assert _staged(config) == ["1"], out
    assert elapsed < 10, f"took {elapsed:.1f}s"
