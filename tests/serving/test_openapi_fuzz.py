"""schemathesis against the real server's own ``/openapi.json`` (issue #16 item 7): requests
generated from the document (valid and invalid bodies, every route) get no 5xx and no hang,
and the server is still healthy and answering correctly afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from lifecycle.cli.background import BackgroundServer, start_background
from tests.support.serving_models import save_logreg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root: Path = tmp_path_factory.mktemp("openapi-fuzz")
    model = save_logreg(root / "model", n_features=2)
    srv = start_background(
        str(model), cwd=root, extra_args=["--no-record", "--trust-pickle", "--timeout", "10"]
    )
    try:
        yield srv
    finally:
        assert srv.stop() == 0


def test_generated_requests_get_no_5xx_and_no_hang(server: BackgroundServer) -> None:
    """Every operation of the document, fed schemathesis's generated cases (hypothesis
    strategies; its pytest plugin is not used: it does not run under this pytest)."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/invocations", "/health", "/version"}
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40 if operation.path == "/invocations" else 5,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            # A hang fails the request after 15 s (the server's own --timeout is 10 s).
            try:
                response = case.call_and_validate(
                    base_url=server.url, checks=[not_a_server_error], timeout=15
                )
            except requests.ConnectionError as exc:
                raise AssertionError(f"{exc}: {case.as_curl_command()}"[:3000]) from exc
            calls.append(response.status_code)

        run()
    assert len(calls) >= 40, calls
    assert any(code == 200 for code in calls) and any(400 <= code < 500 for code in calls)


def test_the_server_is_healthy_and_correct_after_the_fuzzing(server: BackgroundServer) -> None:
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    body = {"dataframe_split": {"columns": ["f0", "f1"], "data": [[0.5, -0.5], [2.0, 1.0]]}}
    resp = requests.post(server.url + "/invocations", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    assert len(json.loads(resp.content)["predictions"]) == 2
