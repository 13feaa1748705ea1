"""Warm starts of ``lifecycle serve`` for pinned versions, over real HTTP and real stores.

The first start of ``models:/NAME/N`` goes through the registry and MLflow (cold) and leaves
a pin and a fast-path verdict in the cache; the next start serves from the verified local
copy before asking the registry (warm), then confirms it with the registry. Answers must
not depend on which start served them; a cache that no longer matches the files, or a
registry that no longer agrees, must never be served silently.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from lifecycle.base.errors import ServingError
from lifecycle.base.lean import cache_dir
from lifecycle.base.workspaces import Workspace, local_workspace, quiet_mlflow_warnings
from lifecycle.cli.background import BackgroundServer, start_background
from lifecycle.registry.versions import log_and_register
from tests.support.serving_models import numeric_frame, save_logreg

pytestmark = pytest.mark.slow


def _register(root: Path, name: str = "warm") -> Workspace:
    ws = local_workspace("dev", root / ".lifecycle")
    log_and_register(
        ws, save_logreg(root / name), name, experiment="serving-tests", trust_pickle=True
    )
    return ws


def _start(root: Path, uri: str, *extra: str) -> BackgroundServer:
    return start_background(uri, workspace="dev", cwd=root, extra_args=list(extra), timeout=180)


def _wait_version(server: BackgroundServer, **expected: str) -> dict[str, Any]:
    """/version once every expected field has its value (background checks take seconds)."""
    deadline = time.monotonic() + 90
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = requests.get(server.url + "/version", timeout=10).json()
        if all(str(doc.get(k, "")).startswith(v) for k, v in expected.items()):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"/version never showed {expected}: {doc}")


def _answers(server: BackgroundServer) -> dict[str, Any]:
    """Predictions through the fast path (JSON split), the general path (CSV) and Azure's."""
    frame = numeric_frame(25, seed=7)
    split = {"dataframe_split": frame.to_dict(orient="split")}
    fast = requests.post(server.url + "/invocations", json=split, timeout=60)
    csv = requests.post(
        server.url + "/invocations",
        data=frame.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
        timeout=120,
    )
    azure = requests.post(
        server.url + "/invocations",
        json={"input_data": {"columns": list(frame.columns), "data": frame.values.tolist()}},
        timeout=120,
    )
    assert (fast.status_code, csv.status_code, azure.status_code) == (200, 200, 200)
    return {"fast": fast.json(), "csv": csv.json(), "azure": azure.json()}


def _pins() -> list[Path]:
    return sorted((cache_dir() / "pins").glob("*.json"))


def test_later_starts_are_warm_and_answer_exactly_like_the_cold_one(tmp_path: Path) -> None:
    _register(tmp_path)
    with _start(tmp_path, "models:/warm/1") as cold:
        doc = _wait_version(cold, start="cold", registry_check="ok")
        _wait_version(cold, general_path="ready")
        cold_answers = _answers(cold)
        assert doc["fast_path"] is True
        deadline = time.monotonic() + 60  # the pin is written after /health turns ready
        while not _pins() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert len(_pins()) == 1
    pin = json.loads(_pins()[0].read_text())
    assert pin["name"] == "warm" and pin["version"] == "1" and pin["copied"] is False

    with _start(tmp_path, "models:/warm/1") as warm:
        first = requests.get(warm.url + "/version", timeout=10).json()
        assert first["start"] == "warm" and first["digest"] == doc["digest"]
        # Requests the fast path does not take wait for the general path instead of failing.
        assert _answers(warm) == cold_answers
        done = _wait_version(warm, registry_check="ok", general_path="ready")
        assert done["version"] == "1"

    with _start(tmp_path, "models:/warm/1", "--workers", "2") as two:
        assert requests.get(two.url + "/version", timeout=10).json()["start"] == "warm"
        assert _answers(two) == cold_answers  # general-path requests wait for their worker
        _wait_version(two, registry_check="ok", general_path="ready")
        for _ in range(4):  # the kernel spreads connections over both workers
            assert _answers(two) == cold_answers

    with _start(tmp_path, "models:/warm/1", "--no-cache") as forced:
        assert requests.get(forced.url + "/version", timeout=10).json()["start"] == "cold"


def test_changed_files_make_the_next_start_cold(tmp_path: Path) -> None:
    _register(tmp_path)
    with _start(tmp_path, "models:/warm/1"):
        deadline = time.monotonic() + 60
        while not _pins() and time.monotonic() < deadline:
            time.sleep(0.2)
    pin = json.loads(_pins()[0].read_text())
    example = Path(pin["path"]) / "input_example.json"
    example.write_text(example.read_text() + "\n", encoding="utf-8")  # one changed byte
    with _start(tmp_path, "models:/warm/1") as server:
        assert requests.get(server.url + "/version", timeout=10).json()["start"] == "cold"
    assert "changed since they were cached" in server.log_path.read_text()  # type: ignore[union-attr]


def test_a_registry_that_disagrees_replaces_the_cached_copy(tmp_path: Path) -> None:
    _register(tmp_path)
    with _start(tmp_path, "models:/warm/1") as cold:
        expected = _answers(cold)
        deadline = time.monotonic() + 60
        while not _pins() and time.monotonic() < deadline:
            time.sleep(0.2)
    # As if version 1 had been deleted and registered again from elsewhere since.
    file = _pins()[0]
    pin = json.loads(file.read_text())
    file.write_text(json.dumps({**pin, "source": pin["source"] + "-elsewhere"}))
    with _start(tmp_path, "models:/warm/1") as warm:
        doc = _wait_version(warm, registry_check="replaced the cached copy")
        assert "source is now" in doc["registry_check"]
        assert _answers(warm) == expected
    assert json.loads(file.read_text())["source"] == pin["source"]  # the pin was rewritten


def test_a_deleted_version_stops_the_warm_server_with_exit_1(tmp_path: Path) -> None:
    ws = _register(tmp_path)
    with _start(tmp_path, "models:/warm/1"):
        deadline = time.monotonic() + 60
        while not _pins() and time.monotonic() < deadline:
            time.sleep(0.2)
    with quiet_mlflow_warnings():
        ws.client().delete_model_version("warm", "1")
    # It starts from the cache, learns from the registry that the version is gone, and
    # stops as a start of a missing version does: exit 1 with the reason.
    warm = _start(tmp_path, "models:/warm/1")
    assert warm.process.wait(timeout=120) == 1
    log = warm.log_path.read_text()  # type: ignore[union-attr]
    errors = [ln for ln in log.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "warm" in errors[0] and "local cache" in errors[0], log
    assert not _pins()  # forgotten: the next start asks the registry first, and fails
    with pytest.raises(ServingError):
        _start(tmp_path, "models:/warm/1")


def test_a_version_restricted_since_it_was_cached_stops_the_warm_server(tmp_path: Path) -> None:
    """A cold start refuses a restricted version; a warm one serves before the registry
    answers, then stops with the same reason (exit 1) once it does (issue #17)."""
    from lifecycle.base.tags import NEEDS_RETRAINING_TAG

    ws = _register(tmp_path)
    with _start(tmp_path, "models:/warm/1"):
        deadline = time.monotonic() + 60
        while not _pins() and time.monotonic() < deadline:
            time.sleep(0.2)
    ws.client().set_model_version_tag("warm", "1", NEEDS_RETRAINING_TAG, "true")
    warm = _start(tmp_path, "models:/warm/1")
    assert warm.process.wait(timeout=120) == 1
    log = warm.log_path.read_text()  # type: ignore[union-attr]
    errors = [ln for ln in log.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, log
    assert "flagged needs_retraining" in errors[0] and "--allow-restricted" in errors[0]
    assert _pins()  # kept: the restriction may be lifted, and the cache is still good
    with _start(tmp_path, "models:/warm/1", "--allow-restricted") as allowed:
        assert _wait_version(allowed, registry_check="ok")["version"] == "1"


def test_a_remote_version_starts_warm_even_while_the_registry_is_down(
    tmp_path: Path,
) -> None:
    from tests.support.mlflow_server import MlflowServer

    registry = MlflowServer(tmp_path / "server").start()
    try:
        ws = Workspace(name="remote", tracking_uri=registry.url, registry_uri=registry.url)
        log_and_register(
            ws, save_logreg(tmp_path / "m"), "down", experiment="serving-tests", trust_pickle=True
        )
        config = tmp_path / "lifecycle.yaml"
        config.write_text(
            json.dumps({"workspaces": {"remote": {"tracking_uri": registry.url}}}),
            encoding="utf-8",
        )

        def start() -> BackgroundServer:
            return start_background(
                "models:/down/1",
                workspace="remote",
                config_path=config,
                cwd=tmp_path,
                extra_args=["--poll-interval", "1"],
            )

        with start() as cold:
            expected = _answers(cold)
            deadline = time.monotonic() + 60
            while not _pins() and time.monotonic() < deadline:
                time.sleep(0.2)
        # A downloaded version is copied into the cache (the download folder is temporary).
        pin = json.loads(_pins()[0].read_text())
        assert pin["copied"] is True and Path(pin["path"]).is_relative_to(cache_dir())
        with start() as warm_up:
            assert _wait_version(warm_up, registry_check="ok")["start"] == "warm"
            assert _answers(warm_up) == expected
    finally:
        registry.stop()
    with start() as warm:
        doc = _wait_version(warm, registry_check="unreachable", general_path="ready")
        assert doc["start"] == "warm"
        assert _answers(warm) == expected
        assert warm.process.poll() is None
        started = time.monotonic()
        assert warm.stop() == 0  # SIGTERM is not held up by the registry being down
        assert time.monotonic() - started < 15
    assert "serving the verified cached copy" in warm.log_path.read_text()  # type: ignore[union-attr]


def test_prepare_only_fills_the_cache_so_the_first_start_is_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from lifecycle.cli import cli

    _register(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(cli, ["serve", "models:/warm/1", "-w", "dev", "--prepare-only", "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.output)
    assert (
        doc["warm_start"] is True and doc["version"] == "1" and doc["digest"].startswith("sha256:")
    )
    refused = runner.invoke(cli, ["serve", "models:/warm/latest", "-w", "dev", "--prepare-only"])
    assert refused.exit_code == 1 and "only a pinned version" in refused.output
    with _start(tmp_path, "models:/warm/1") as server:
        assert requests.get(server.url + "/version", timeout=10).json()["start"] == "warm"


def test_downloaded_copies_are_pruned_least_recently_served_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.fastpath import ModelInfo
    from serving.warmstart import load_pin, save_pin

    model = save_logreg(tmp_path / "m")
    ws = Workspace(name="r", tracking_uri="http://127.0.0.1:1", registry_uri="http://127.0.0.1:1")
    local = local_workspace("dev", tmp_path / ".lifecycle")

    def pin(version: str, downloaded: bool = True, where: Workspace = ws) -> None:
        info = ModelInfo(name="m", version=version, uri=f"models:/m/{version}", digest="d")
        assert save_pin(where, str(model), info, "src", downloaded=downloaded) is not None
        time.sleep(0.05)  # distinct modification times

    pin("1", downloaded=False, where=local)  # a local store's own files: never pruned
    for v in ("1", "2", "3"):
        pin(v)
    assert load_pin(ws, "m", "1") is not None  # served again: now the most recent
    time.sleep(0.05)
    monkeypatch.setenv("LIFECYCLE_CACHE_MAX_MODELS", "2")
    pin("4")
    kept = {v for v in ("1", "2", "3", "4") if load_pin(ws, "m", v) is not None}
    assert kept == {"1", "4"}
    assert len(list((cache_dir() / "models").iterdir())) == 2
    assert load_pin(local, "m", "1") is not None
    assert (model / "MLmodel").is_file()  # the source itself is never touched
