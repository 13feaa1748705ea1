"""``lifecycle package`` of a model that runs in its own environment: the context holds that
environment's wheels (``env/wheelhouse``), and from the context alone, with no package index,
a fresh virtual environment installs the toolkit, builds the model's environment (as the
image's Dockerfile does) and serves the model like the source.

The model is the toy of tests/base/test_envs.py: its requirement ``lifecycle-toy-dep`` is on
no index, only in the wheelhouse pip is pointed at (``PIP_FIND_LINKS``, ``PIP_NO_INDEX``),
as a team's private wheel would be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from lifecycle.base.workspaces import local_workspace
from lifecycle.cli.background import free_port
from lifecycle.registry.versions import log_and_register
from tests.support.toy_env import build_wheelhouse, save_toy_model

pytestmark = pytest.mark.slow

ROWS = {"dataframe_split": {"columns": ["x", "s"], "data": [[1.0, "a"], [2.5, None]]},
        "params": {"scale": 2.0}}  # fmt: skip


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, (proc.stdout[-1500:], proc.stderr[-3000:])
    return proc  # type: ignore[no-any-return]


def _serve(python_bin: Path, model: str, cwd: Path, env: dict[str, str], *extra: str) -> object:
    port = free_port()
    proc = subprocess.Popen(
        [str(python_bin / "lifecycle"), "serve", model, "--port", str(port), *extra],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "not ready in 180 s"
            time.sleep(0.3)
        resp = requests.post(url + "/invocations", json=ROWS, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.json()
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_model_environment_packs_its_wheels_and_installs_and_serves_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = build_wheelhouse(tmp_path / "scratch")
    project = tmp_path / "project"
    project.mkdir()
    ws = local_workspace("dev", project / ".lifecycle")
    log_and_register(ws, save_toy_model(tmp_path), "toy", experiment="t")
    # pip (here and in the model's environment) finds the private wheel and nothing else.
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
               "PIP_FIND_LINKS": str(wheels), "LIFECYCLE_ENV_CACHE": str(tmp_path / "envs")}  # fmt: skip
    cli = [sys.executable, "-m", "lifecycle"]
    _run([*cli, "env", "prepare", "models:/toy/1", "-w", "dev"], cwd=project, env=offline)
    expected = _serve(Path(sys.executable).parent, "models:/toy/1", project, offline, "-w", "dev")

    # Packaging gathers the toolkit's wheels from the index, the private one from find-links.
    out = project / "build"
    online = {k: v for k, v in offline.items() if k not in ("PIP_NO_INDEX", "PIP_CONFIG_FILE")}
    if "PIP_CONFIG_FILE" in os.environ:
        online["PIP_CONFIG_FILE"] = os.environ["PIP_CONFIG_FILE"]
    args = [*cli, "package", "models:/toy/1", "-w", "dev", "--out", str(out), "--json"]
    packed = json.loads(_run(args, cwd=project, env=online).stdout)
    pins = (out / "requirements.txt").read_text()
    assert "lifecycle-toy-dep" not in pins  # the model's requirements live in its environment
    assert packed["env"] == "requirements"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["env"]["name"] == "requirements" and manifest["env"]["wheels"] > 0
    env_wheels = {p.name.split("-")[0].lower() for p in (out / "env" / "wheelhouse").iterdir()}
    assert {"lifecycle_toy_dep", "pandas", "pyarrow", "numpy"} <= env_wheels
    assert "lifecycle env prepare" in (out / "Dockerfile").read_text()

    # A machine with nothing but the context: no index, no find-links, a fresh home.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    home = tmp_path / "home"
    home.mkdir()
    clean = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home),
             "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
             "LIFECYCLE_ENV_CACHE": str(home / "envs")}  # fmt: skip
    _run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links",
          str(out / "wheelhouse"), "-r", str(out / "requirements.txt")], env=clean)  # fmt: skip
    _run([str(venv / "bin" / "lifecycle"), "env", "prepare", str(out / "model"),
          "--find-links", str(out / "env" / "wheelhouse")], env=clean, cwd=home)  # fmt: skip
    got = _serve(venv / "bin", str(out / "model"), home, clean, "--name", "toy")
    assert got == expected
