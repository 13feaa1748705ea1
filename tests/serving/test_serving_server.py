"""Operations of ``lifecycle serve`` over real HTTP: API key, limits, timeout, /version,
/metrics, input logging, deployment records, stage-following under load, SIGTERM under load
with two workers, and a model that fails to load."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from lifecycle.base.audit import read_history
from lifecycle.base.deployments import list_deployments
from lifecycle.base.errors import ModelNotFoundError, ServingError
from lifecycle.base.refs import resolve_model
from lifecycle.base.workspaces import Workspace, local_workspace, quiet_mlflow_warnings
from lifecycle.cli.background import BackgroundServer, start_background
from lifecycle.registry.versions import log_and_register
from tests.support.serving_models import save_logreg, save_slow_model

pytestmark = pytest.mark.slow

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _promote(ws: Workspace, name: str, version: str) -> None:
    with quiet_mlflow_warnings():
        ws.client().transition_model_version_stage(
            name, version, "Production", archive_existing_versions=True
        )


def _body(f0: float, f1: float, sleep: float = 0.0) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["f0", "f1", "sleep"], "data": [[f0, f1, sleep]]}}


@pytest.fixture(scope="module")
def slow(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BackgroundServer, Workspace, Path]]:
    root = tmp_path_factory.mktemp("ops")
    ws = local_workspace("dev", root / ".lifecycle")
    log_and_register(
        ws, save_slow_model(root / "v1", 1.0), "slow", experiment="serving-tests", trust_pickle=True
    )
    _promote(ws, "slow", "1")
    server = start_background(
        "models:/slow/Production",
        workspace="dev",
        cwd=root,
        env={"LIFECYCLE_SERVE_API_KEY": KEY},
        extra_args=[
            "--max-body-bytes",
            "4000",
            "--timeout",
            "1",
            "--log-inputs",
            str(root / "logged"),
            "--poll-interval",
            "0.5",
        ],
    )
    try:
        yield server, ws, root
    finally:
        assert server.stop() == 0


def test_api_key_from_environment_is_required(
    slow: tuple[BackgroundServer, Workspace, Path],
) -> None:
    server, _, _ = slow
    url = server.url + "/invocations"
    missing = requests.post(url, json=_body(1, 2), timeout=10)
    assert missing.status_code == 401
    assert "Bearer" in missing.json()["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = requests.post(
        url, json=_body(1, 2), headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    ok = requests.post(url, json=_body(1, 2), headers=AUTH, timeout=10)
    assert ok.status_code == 200
    assert ok.json() == {"predictions": [3.0]}
    assert requests.get(server.url + "/health", timeout=10).status_code == 200  # probes stay open
    assert requests.get(server.url + "/version", timeout=10).status_code == 401


def test_body_size_limit_is_413_with_a_clear_message(
    slow: tuple[BackgroundServer, Workspace, Path],
) -> None:
    server, _, _ = slow
    rows = [[float(i), 1.0, 0.0] for i in range(400)]
    big = {"dataframe_split": {"columns": ["f0", "f1", "sleep"], "data": rows}}
    resp = requests.post(server.url + "/invocations", json=big, headers=AUTH, timeout=10)
    assert resp.status_code == 413
    assert "4000 bytes" in resp.json()["message"] and "--max-body-bytes" in resp.json()["message"]
    after = requests.post(server.url + "/invocations", json=_body(1, 1), headers=AUTH, timeout=10)
    assert after.status_code == 200


def test_expect_100_continue_is_answered(slow: tuple[BackgroundServer, Workspace, Path]) -> None:
    import socket

    server, _, _ = slow
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps(_body(1, 2)).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nExpect: 100-continue\r\nConnection: close\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b"".join(iter(lambda: sock.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"predictions": [3.0]}')
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{head}Content-Length: 999999\r\n\r\n".encode())
        answer = b"".join(iter(lambda: sock.recv(4096), b""))
    assert answer.startswith(b"HTTP/1.1 413 ")  # refused before the client sends the body


def test_slow_request_is_504_and_the_server_keeps_answering(
    slow: tuple[BackgroundServer, Workspace, Path],
) -> None:
    server, _, _ = slow
    t0 = time.monotonic()
    resp = requests.post(
        server.url + "/invocations", json=_body(1, 1, sleep=3), headers=AUTH, timeout=10
    )
    assert resp.status_code == 504
    assert time.monotonic() - t0 < 2.5
    assert "1 s" in resp.json()["message"] and "--timeout" in resp.json()["message"]
    ok = requests.post(server.url + "/invocations", json=_body(2, 2), headers=AUTH, timeout=10)
    assert ok.json() == {"predictions": [4.0]}


def test_version_metrics_openapi(slow: tuple[BackgroundServer, Workspace, Path]) -> None:
    server, _, _ = slow
    version = requests.get(server.url + "/version", headers=AUTH, timeout=10).json()
    assert version["name"] == "slow"
    assert version["version"] == "1"
    assert version["stage"] == "Production"
    assert version["digest"].startswith("sha256:")
    assert version["fast_path"] is False  # a custom pyfunc model: MLflow's general path
    requests.post(server.url + "/invocations", json=_body(1, 2), headers=AUTH, timeout=10)
    metrics = requests.get(server.url + "/metrics", headers=AUTH, timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'lifecycle_requests_total{route="/invocations",status="200"}' in text
    assert 'lifecycle_requests_total{route="/invocations",status="401"}' in text
    assert "lifecycle_request_latency_seconds_bucket" in text
    assert "lifecycle_batch_rows_count" in text
    spec = requests.get(server.url + "/openapi.json", headers=AUTH, timeout=10).json()
    assert spec["openapi"].startswith("3.") and "/invocations" in spec["paths"]


def test_unknown_paths_are_404_for_any_method_and_deep_json_is_400(
    slow: tuple[BackgroundServer, Workspace, Path],
) -> None:
    server, _, _ = slow
    for method in ("GET", "POST", "PUT", "DELETE"):
        resp = requests.request(method, server.url + "/nope", headers=AUTH, timeout=10)
        assert resp.status_code == 404, method
        assert resp.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert requests.post(server.url + "/health", headers=AUTH, timeout=10).status_code == 405
    assert requests.get(server.url + "/invocations", headers=AUTH, timeout=10).status_code == 405
    # Measured before: a deeply nested array got no answer at all (the connection dropped).
    deep = b"[" * 1_500 + b"]" * 1_500  # past the decoder's recursion limit (1,000)
    resp = requests.post(
        server.url + "/invocations",
        data=deep,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 400
    assert "nested too deeply" in resp.json()["message"]
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_inputs_and_predictions_are_logged_to_parquet(
    slow: tuple[BackgroundServer, Workspace, Path],
) -> None:
    server, _, root = slow
    for i in range(3):
        resp = requests.post(
            server.url + "/invocations", json=_body(i, 10.0), headers=AUTH, timeout=10
        )
        assert resp.status_code == 200
    deadline = time.monotonic() + 20
    frame = pd.DataFrame()
    while time.monotonic() < deadline:
        files = sorted((root / "logged").glob("*.parquet"))
        if files:
            frame = pd.concat([pd.read_parquet(f) for f in files])
            if (frame["f1"] == 10.0).sum() >= 3:
                break
        time.sleep(0.5)
    logged = frame[frame["f1"] == 10.0]
    assert sorted(logged["f0"]) == [0.0, 1.0, 2.0]
    assert sorted(logged["prediction"]) == [10.0, 11.0, 12.0]
    assert set(logged["_model_version"]) == {"1"}
    assert not list((root / "logged").glob("*.tmp"))


def test_start_is_recorded_on_the_version(slow: tuple[BackgroundServer, Workspace, Path]) -> None:
    server, ws, _ = slow
    deadline = time.monotonic() + 30  # recorded just after the server is ready
    records: list[dict[str, Any]] = []
    while not records and time.monotonic() < deadline:
        records = [r for r in list_deployments(ws, "slow", "1") if r["kind"] == "serving"]
        time.sleep(0.2)
    assert records and records[-1]["target"] == server.url.removeprefix("http://")
    assert records[-1]["uri"] == "models:/slow/Production"
    # ... and an event of the model's history (``lifecycle history``).
    events = [e for e in read_history(ws, "slow") if e["action"] == "deploy"]
    target = server.url.removeprefix("http://")
    assert any(e["kind"] == "serving" and e["target"] == target for e in events), events


def test_stage_following_swaps_under_load_without_failures(
    slow: tuple[BackgroundServer, Workspace, Path],
) -> None:
    server, ws, root = slow
    log_and_register(
        ws,
        save_slow_model(root / "v2", 10.0),
        "slow",
        experiment="serving-tests",
        trust_pickle=True,
    )
    results: list[tuple[int, str, Any]] = []
    stop = threading.Event()

    def hammer() -> None:
        session = requests.Session()
        for _ in range(5000):  # bounded; normally stopped much sooner
            if stop.is_set():
                return
            resp = session.post(
                server.url + "/invocations", json=_body(1, 2), headers=AUTH, timeout=10
            )
            results.append((resp.status_code, resp.headers.get("x-model-version", ""), resp.json()))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    _promote(ws, "slow", "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.get(server.url + "/version", headers=AUTH, timeout=10).json()["version"] == "2":
            break
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert requests.get(server.url + "/version", headers=AUTH, timeout=10).json()["version"] == "2"
    assert results and all(status == 200 for status, _, _ in results)
    answers = {(v, json.dumps(body)) for _, v, body in results}
    assert ("1", json.dumps({"predictions": [3.0]})) in answers
    assert ("2", json.dumps({"predictions": [30.0]})) in answers
    assert answers <= {("1", '{"predictions": [3.0]}'), ("2", '{"predictions": [30.0]}')}
    assert any(r["kind"] == "serving" for r in list_deployments(ws, "slow", "2"))


def test_sigterm_under_load_finishes_in_flight_requests(tmp_path: Path) -> None:
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    log_and_register(
        ws,
        save_slow_model(tmp_path / "m", 1.0),
        "slow",
        experiment="serving-tests",
        trust_pickle=True,
    )
    server = start_background(
        "models:/slow/1", workspace="dev", cwd=tmp_path, extra_args=["--workers", "2"]
    )
    port = int(server.url.rsplit(":", 1)[1])
    outcomes: list[str] = []
    signalled = threading.Event()

    def client(sleep: float) -> None:
        body = json.dumps(_body(1, 2, sleep)).encode()
        for _ in range(2000):  # bounded
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                conn.connect()
            except OSError:
                outcomes.append("refused")  # only acceptable once the server was told to stop
                return
            try:
                conn.request(
                    "POST",
                    "/invocations",
                    body,
                    {"Content-Type": "application/json", "Connection": "close"},
                )
                resp = conn.getresponse()
                payload = resp.read()
                ok = resp.status == 200 and json.loads(payload) == {"predictions": [3.0]}
                outcomes.append("ok" if ok else f"bad {resp.status}")
            except Exception as exc:
                outcomes.append(f"failed {type(exc).__name__}")
            finally:
                conn.close()
            if signalled.is_set() and sleep:
                return

    threads = [threading.Thread(target=client, args=(0.4 if i % 2 else 0.0,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    signalled.set()
    code = server.stop(timeout=60)
    for t in threads:
        t.join(timeout=60)
    assert code == 0
    assert outcomes.count("ok") > 6
    assert all(o in ("ok", "refused") for o in outcomes), [
        o for o in outcomes if o not in ("ok", "refused")
    ]
    assert outcomes.count("refused") == len(threads) or all(not t.is_alive() for t in threads)


def _serve_cli(root: Path, monkeypatch: pytest.MonkeyPatch, uri: str) -> Any:
    from click.testing import CliRunner

    from lifecycle.cli import cli
    from tests.support.mlflow_server import free_port

    monkeypatch.chdir(root)
    return CliRunner().invoke(cli, ["serve", uri, "-w", "dev", "--port", str(free_port())])


def test_model_that_fails_to_load_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    broken = save_logreg(tmp_path / "broken")
    (broken / "model.skops").unlink()
    log_and_register(ws, broken, "broken", experiment="serving-tests", trust_pickle=True)
    result = _serve_cli(tmp_path, monkeypatch, "models:/broken/1")
    assert result.exit_code == 1
    error = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and "models:/broken/1 failed to load" in error[0]
    assert "Traceback" not in result.output


def test_unknown_model_fails_the_start_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    ws.ensure_local_dirs()
    result = _serve_cli(tmp_path, monkeypatch, "models:/nope/1")
    assert result.exit_code == 1
    # The registry is asked in a child process: its error comes back word for word.
    with pytest.raises(ModelNotFoundError) as expected:
        resolve_model(ws, "models:/nope/1")
    assert f"Error: {expected.value}" in result.output.splitlines()
    assert "Traceback" not in result.output


def test_start_background_reports_why_a_start_failed(tmp_path: Path) -> None:
    with pytest.raises(ServingError) as err:
        start_background(str(tmp_path / "not-a-model"), cwd=tmp_path, timeout=120)
    assert "exit code" in str(err.value) and "not-a-model" in str(err.value)


def test_alias_following_swaps_when_the_alias_moves(tmp_path: Path) -> None:
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    for factor in (1.0, 10.0):
        log_and_register(
            ws,
            save_slow_model(tmp_path / f"f{factor:g}", factor),
            "aliased",
            experiment="t",
            trust_pickle=True,
        )
    with quiet_mlflow_warnings():
        ws.client().set_registered_model_alias("aliased", "champion", "1")
    server = start_background(
        "models:/aliased@champion",
        workspace="dev",
        cwd=tmp_path,
        extra_args=["--poll-interval", "0.5", "--workers", "2"],  # each worker follows
    )
    results: list[tuple[int, str, Any]] = []
    stop = threading.Event()

    def hammer() -> None:
        session = requests.Session()
        while not stop.is_set():
            resp = session.post(server.url + "/invocations", json=_body(1, 2), timeout=10)
            results.append((resp.status_code, resp.headers.get("x-model-version", ""), resp.json()))

    thread = threading.Thread(target=hammer)
    try:
        doc = requests.get(server.url + "/version", timeout=10).json()
        assert (doc["version"], doc["alias"]) == ("1", "champion")
        thread.start()
        time.sleep(0.5)
        with quiet_mlflow_warnings():
            ws.client().set_registered_model_alias("aliased", "champion", "2")
        deadline = time.monotonic() + 60
        # Until the hammered connection's own worker answers with v2 (each worker polls on
        # its own: /version may be answered by the other one, which swapped first).
        while time.monotonic() < deadline and not any(v == "2" for _, v, _ in results):
            time.sleep(0.2)
        time.sleep(0.5)
        while not list_deployments(ws, "aliased", "2") and time.monotonic() < deadline:
            time.sleep(0.2)  # the worker that records swaps may swap a poll later
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
        assert server.stop() == 0
    assert results and all(status == 200 for status, _, _ in results)
    answers = {(v, json.dumps(body)) for _, v, body in results}
    assert answers == {("1", '{"predictions": [3.0]}'), ("2", '{"predictions": [30.0]}')}
    # The start is recorded on version 1 and the swap on version 2 (by one worker, once).
    assert [r["kind"] for r in list_deployments(ws, "aliased", "1")] == ["serving"]
    assert [r["kind"] for r in list_deployments(ws, "aliased", "2")] == ["serving"]


def test_a_big_fast_path_request_is_504_past_the_timeout(tmp_path: Path) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    from tests.support.serving_models import numeric_frame

    X = numeric_frame(400, seed=3)
    forest = RandomForestClassifier(n_estimators=300, random_state=0).fit(X, X["f0"] > 0)
    mlflow.sklearn.save_model(
        forest,
        str(tmp_path / "forest"),
        signature=infer_signature(X, forest.predict(X)),
        input_example=X.head(2),
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    log_and_register(ws, tmp_path / "forest", "forest", experiment="t", trust_pickle=True)
    big = numeric_frame(60_000, seed=4)
    with start_background(
        "models:/forest/1", workspace="dev", cwd=tmp_path, extra_args=["--timeout", "0.05"]
    ) as server:
        assert requests.get(server.url + "/version", timeout=10).json()["fast_path"] is True
        t0 = time.monotonic()
        resp = requests.post(
            server.url + "/invocations",
            json={"dataframe_split": big.to_dict(orient="split")},
            timeout=60,
        )
        assert resp.status_code == 504, resp.text[:200]
        assert "0.05 s" in resp.json()["message"]
        assert time.monotonic() - t0 < 10  # answered at the deadline, not after the forest
        one = requests.post(
            server.url + "/invocations",
            json={"dataframe_split": big.head(1).to_dict(orient="split")},
            timeout=60,
        )
        assert one.status_code == 200
        assert one.json() == {"predictions": forest.predict(big.head(1)).tolist()}


def test_metrics_add_up_over_all_workers(tmp_path: Path) -> None:
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    log_and_register(ws, save_logreg(tmp_path / "m"), "counted", experiment="t", trust_pickle=True)
    body = {"dataframe_split": {"columns": ["f0", "f1", "f2", "f3"], "data": [[1, 2, 3, 4]]}}
    with start_background(
        "models:/counted/1", workspace="dev", cwd=tmp_path, extra_args=["--workers", "2"]
    ) as server:
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            resp = requests.post(server.url + "/invocations", json=body, timeout=30)
            assert resp.status_code == 200
        time.sleep(1.5)  # each worker publishes its counters every second
        # Scrapes land on either worker (new connections); 40 requests over SO_REUSEPORT
        # reach both, so a worker reporting only its own counters would show fewer.
        for _ in range(6):
            text = requests.get(server.url + "/metrics", timeout=10).text
            lines = dict(
                line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")
            )
            assert lines["lifecycle_workers"] == "2"
            assert lines['lifecycle_predictions_total{path="fast"}'] == "40"
            assert lines["lifecycle_request_latency_seconds_count"] == "40"
