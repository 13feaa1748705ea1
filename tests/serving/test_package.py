"""``lifecycle package``: a build context that installs with no network and serves like the
source version; the image built from it with buildah/podman, run and queried; a model
directory that starts warm once ``serve --prepare-only`` saw it.

Real parts only: a real local workspace, real pip into a fresh virtual environment with
the machine's pip configuration switched off (``PIP_CONFIG_FILE=/dev/null``: no index, no
find-links but the context's own wheelhouse), real ``lifecycle serve`` processes over HTTP,
and a real image built and run by podman on a base image made here with debootstrap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from lifecycle.base.workspaces import local_workspace
from lifecycle.cli.background import free_port, start_background
from lifecycle.registry.versions import log_and_register
from tests.support.serving_models import numeric_frame, save_logreg

pytestmark = pytest.mark.slow

FRAME = numeric_frame(25, seed=11)


def _cli(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle", *args], cwd=cwd, capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with ``churn`` version 1 (a scikit-learn model saved with skops)."""
    root = tmp_path_factory.mktemp("pkg")
    ws = local_workspace("dev", root / ".lifecycle")
    log_and_register(ws, save_logreg(root / "m"), "churn", experiment="t")
    return root


@pytest.fixture(scope="module")
def context(project: Path) -> Path:
    out = project / "build" / "churn-1"
    proc = _cli(project, "package", "models:/churn/1", "--out", str(out), "--json")
    result = json.loads(proc.stdout)
    assert result["out"] == str(out) and result["version"] == "1"
    return out


@pytest.fixture(scope="module")
def expected(project: Path) -> list[object]:
    """The source version's predictions, through the toolkit's own server."""
    with start_background("models:/churn/1", workspace="dev", cwd=project) as srv:
        body = {"dataframe_split": FRAME.to_dict(orient="split")}
        return requests.post(srv.url + "/invocations", json=body, timeout=30).json()["predictions"]


def test_the_context_has_the_layout_pins_and_manifest(project: Path, context: Path) -> None:
    assert {p.name for p in context.iterdir()} == {
        "Dockerfile", "model", "requirements.txt", "wheelhouse", "manifest.json",
    }  # fmt: skip
    manifest = json.loads((context / "manifest.json").read_text())
    ws = local_workspace("dev", project / ".lifecycle")
    from mlflow import MlflowClient

    tags = MlflowClient(ws.tracking_uri, ws.registry_uri).get_model_version("churn", "1").tags
    assert manifest["digest"] == tags["lifecycle.content_digest"] and manifest["digest_verified"]
    assert (manifest["name"], manifest["version"], manifest["workspace"]) == ("churn", "1", "dev")
    lines = (context / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines)
    assert all(v for v in pins.values()) and len(pins) == len(lines)
    assert pins["mlflow-lifecycle"] == manifest["toolkit"]
    assert pins["scikit-learn"] == __import__("sklearn").__version__
    assert manifest["packages"] == pins
    wheels = {
        w.name.split("-")[0].replace("_", "-").lower() for w in (context / "wheelhouse").iterdir()
    }
    assert {n.replace(".", "-").replace("_", "-") for n in pins} <= {
        n.replace(".", "-") for n in wheels
    }
    dockerfile = (context / "Dockerfile").read_text()
    for needed in ("USER lifecycle", "HEALTHCHECK", "/health", "--prepare-only", "STOPSIGNAL SIGTERM",
                   'ENTRYPOINT ["/opt/lifecycle/venv/bin/lifecycle", "serve"',
                   "LIFECYCLE_SERVE_PORT=8080", "LIFECYCLE_SERVE_MODEL_NAME=churn"):  # fmt: skip
        assert needed in dockerfile, needed


def test_the_context_installs_offline_in_a_fresh_venv_and_serves_like_the_source(
    tmp_path: Path, context: Path, expected: list[object]
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", "--find-links",
         str(context / "wheelhouse"), "-r", str(context / "requirements.txt")],
        env=offline, capture_output=True, text=True,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-2000:]
    # The new environment knows nothing of this checkout: a clean environment, another cwd.
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home)}
    proc = subprocess.Popen(
        [str(venv / "bin" / "lifecycle"), "serve", str(context / "model"), "--port", str(port),
         "--name", "churn", "--model-version", "1"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url, proc)
        body = {"dataframe_split": FRAME.to_dict(orient="split")}
        got = requests.post(url + "/invocations", json=body, timeout=30).json()["predictions"]
        assert got == expected
        v2 = _v2_infer(url, "churn", "1", FRAME)
        assert v2 == expected
        location = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import lifecycle; print(lifecycle.__file__)"],
            capture_output=True, text=True, env=env, cwd=home,
        ).stdout  # fmt: skip
        assert str(venv) in location  # the wheel's copy, not this checkout
    finally:
        proc.terminate()
        proc.wait(30)


def test_package_refuses_a_folder_that_is_not_empty_and_leaves_it_alone(project: Path) -> None:
    out = project / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = _cli(project, "package", "models:/churn/1", "--out", str(out), check=False)
    assert proc.returncode == 1
    assert f"--out '{out}' is not empty" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_build_without_buildah_or_podman_exits_1_naming_both_and_keeps_the_context(
    project: Path, tmp_path: Path
) -> None:
    """On a machine with neither tool (PATH without them), --build still leaves the context
    and says which tools are missing and how to get one."""
    out = project / "no-builder"
    bare = tmp_path / "bin"  # a PATH with nothing on it: the CLI runs by absolute path
    bare.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle", "package", "models:/churn/1", "--out", str(out),
         "--image", "localhost/churn:nobuilder", "--build"],
        cwd=project, capture_output=True, text=True, env={**os.environ, "PATH": str(bare)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    assert "buildah: not installed; podman: not installed" in errors[0]
    assert "apt-get install buildah" in errors[0]
    assert (out / "Dockerfile").is_file() and (out / "manifest.json").is_file()


def test_package_refuses_files_that_are_not_the_versions_and_writes_nothing(
    tmp_path: Path,
) -> None:
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    log_and_register(ws, save_logreg(tmp_path / "m"), "churn", experiment="t")
    from mlflow import MlflowClient

    from lifecycle.base.fetch import local_model_dir

    source = MlflowClient(ws.tracking_uri, ws.registry_uri).get_model_version("churn", "1").source
    store = Path(str(local_model_dir(source)))
    (store / "requirements.txt").write_text("mlflow\nscikit-learn\n# changed after registering\n")
    out = tmp_path / "out"
    proc = _cli(tmp_path, "package", "models:/churn/1", "--out", str(out), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "refusing to package files that are not the version's" in proc.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_model_directory_starts_warm_after_prepare_only(tmp_path: Path) -> None:
    model = save_logreg(tmp_path / "m")
    env_cache = {"LIFECYCLE_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run(
        [sys.executable, "-m", "lifecycle", "serve", str(model), "--prepare-only", "--json"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env_cache},
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["warm_start"] is True
    with start_background(
        str(model), cwd=tmp_path, env=env_cache,
        extra_args=["--name", "churn", "--model-version", "7"],
    ) as srv:  # fmt: skip
        version = requests.get(srv.url + "/version", timeout=10).json()
        assert (version["start"], version["name"], version["version"]) == ("warm", "churn", "7")
        assert version["registry_check"] == "ok"  # a directory has no registry to ask
        meta = requests.get(srv.url + "/v2/models/churn/versions/7", timeout=10).json()
        assert [i["name"] for i in meta["inputs"]] == ["f0", "f1", "f2", "f3"]
    # Changed files have another digest: a cold start.
    (model / "input_example.json").write_text((model / "input_example.json").read_text() + " ")
    with start_background(str(model), cwd=tmp_path, env=env_cache) as srv:
        assert requests.get(srv.url + "/version", timeout=10).json()["start"] == "cold"


def test_name_and_version_options_are_for_directories_only(project: Path) -> None:
    proc = _cli(
        project, "serve", "models:/churn/1", "-w", "dev", "--name", "x", "--port",
        str(free_port()), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--name and --model-version name a model directory" in proc.stderr


# --------------------------------------------------------------------------- the image


@pytest.fixture(scope="module")
def image(project: Path) -> Iterator[str]:
    from tests.support.images import base_image, why_no_containers

    reason = why_no_containers()
    if reason is not None:
        print(f"SKIPPED image build: {reason}")
        pytest.skip(reason)
    base = base_image()
    name = f"localhost/lifecycle-test-churn:{time.monotonic_ns()}"
    out = project / "build" / "image-context"
    proc = _cli(
        project, "package", "models:/churn/1", "--out", str(out), "--image", name, "--build",
        "--base", base, "--json", check=False,
    )  # fmt: skip
    if proc.returncode != 0 and "Cannot build an image" in proc.stderr:
        print(f"SKIPPED image build: {proc.stderr.strip()}")
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["extra"]["image_bytes"] > 0
    yield name
    subprocess.run(["podman", "rmi", "-f", name], capture_output=True)


def test_the_image_runs_as_a_non_root_user_starts_warm_and_answers_like_the_source(
    image: str, expected: list[object]
) -> None:
    from tests.support.images import podman, run_detached

    health = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image)
    assert "/health" in health.stdout, health.stdout + health.stderr
    port = free_port()
    cid, flags = run_detached(image, {"LIFECYCLE_SERVE_PORT": str(port)})
    print(f"podman run flags that worked here: {' '.join(flags)}")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(url, None, cid=cid)
        version = requests.get(url + "/version", timeout=10).json()
        assert version["start"] == "warm"  # the cache was filled at build time
        assert (version["name"], version["version"]) == ("churn", "1")
        body = {"dataframe_split": FRAME.to_dict(orient="split")}
        assert (
            requests.post(url + "/invocations", json=body, timeout=30).json()["predictions"]
            == expected
        )
        assert _v2_infer(url, "churn", "1", FRAME) == expected
        assert podman("exec", cid, "id", "-u").stdout.strip() not in ("", "0")
        manifest = json.loads(podman("exec", cid, "cat", "/opt/lifecycle/manifest.json").stdout)
        assert manifest["version"] == "1"
        t0 = time.monotonic()
        stop = podman("stop", "-t", "20", cid)
        assert stop.returncode == 0, stop.stderr
        assert time.monotonic() - t0 < 15  # SIGTERM reached the server (not the 20 s kill)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", cid).stdout.strip()
        assert code == "0"
    finally:
        podman("rm", "-f", cid)


# --------------------------------------------------------------------------- helpers


def _v2_infer(url: str, name: str, version: str, frame: pd.DataFrame) -> list[object]:
    body = {
        "inputs": [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }
    reply = requests.post(f"{url}/v2/models/{name}/versions/{version}/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["outputs"][0]["data"])


def _wait_health(
    url: str, proc: subprocess.Popen[str] | None, cid: str | None = None, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    logs = (
        shutil.which("podman")
        and cid
        and subprocess.run(["podman", "logs", cid], capture_output=True, text=True).stderr
    )
    raise AssertionError(f"not healthy within {timeout} s: {logs or ''}")
