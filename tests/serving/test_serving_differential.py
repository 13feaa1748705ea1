"""The same payloads to ``lifecycle serve`` and to MLflow's own scoring server.

Every MLflow input format, many shapes and dtypes, missing and extra columns, wrong types,
wrong content types and empty bodies: the predictions must be equal and the error classes
(400 bad input, 415 unsupported content type) the same. Both servers are real processes on
127.0.0.1 serving the same registered LogisticRegression.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from lifecycle.base.workspaces import local_workspace
from lifecycle.cli.background import BackgroundServer, start_background
from lifecycle.registry.versions import log_and_register
from tests.support.mlflow_server import free_port
from tests.support.serving_models import FEATURES, MlflowScoringServer, save_logreg

pytestmark = pytest.mark.slow

JSON = "application/json"
ROW = [0.5, -1.25, 3.0, 0.0]
ROWS = [[0.1 * i - 1.0, 0.2 * i, -0.3 * i, 1.0] for i in range(7)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("diff")
    model_dir = save_logreg(root / "model")
    ws = local_workspace("dev", root / ".lifecycle")
    log_and_register(ws, model_dir, "diff_lr", experiment="serving-tests", trust_pickle=True)
    theirs = MlflowScoringServer(model_dir, free_port(), root / "mlflow.log").start()
    ours: BackgroundServer | None = None
    try:
        ours = start_background("models:/diff_lr/1", workspace="dev", cwd=root)
        theirs.wait()
        yield ours.url, theirs.url
    finally:
        theirs.stop()
        if ours is not None:
            ours.stop()


def split(data: object, columns: object = FEATURES, **extra: object) -> bytes:
    body: dict[str, object] = {"data": data}
    if columns is not None:
        body["columns"] = columns
    body.update(extra)
    return json.dumps({"dataframe_split": body}).encode()


def records(rows: list[dict[str, object]]) -> bytes:
    return json.dumps({"dataframe_records": rows}).encode()


def rec(values: list[object], names: list[str] = FEATURES) -> dict[str, object]:
    return dict(zip(names, values, strict=True))


CSV_HEAD = ",".join(FEATURES)

CASES: list[tuple[str, str | None, bytes]] = [
    ("split-one-row", JSON, split([ROW])),
    ("split-many-rows", JSON, split(ROWS)),
    ("split-ints", JSON, split([[1, 2, 3, 4], [0, -1, 5, 2]])),
    ("split-mixed-int-float", JSON, split([[1, 2.5, 3, 4.0]])),
    ("split-big-values", JSON, split([[1e300, -1e300, 1e-300, 0.0]])),
    ("split-reordered-columns", JSON, split([ROW[::-1]], FEATURES[::-1])),
    ("split-extra-column", JSON, split([[*ROW, 9.0]], [*FEATURES, "extra"])),
    ("split-missing-column", JSON, split([ROW[:3]], FEATURES[:3])),
    ("split-with-index", JSON, split(ROWS[:2], index=[10, 20])),
    ("split-bad-index-length", JSON, split(ROWS[:2], index=[1])),
    ("split-no-columns", JSON, split([ROW], None)),
    ("split-string-value", JSON, split([[0.5, "abc", 3.0, 0.0]])),
    ("split-numeric-string", JSON, split([[0.5, "1.5", 3.0, 0.0]])),
    ("split-bool-value", JSON, split([[0.5, True, 3.0, 0.0]])),
    ("split-all-bool", JSON, split([[True, False, True, False]])),
    ("split-null-value", JSON, split([[0.5, None, 3.0, 0.0]])),
    (
        "split-nan-literal",
        JSON,
        b'{"dataframe_split": {"columns": ["f0","f1","f2","f3"], "data": [[NaN, 1, 2, 3]]}}',
    ),
    (
        "split-infinity-literal",
        JSON,
        b'{"dataframe_split": {"columns": ["f0","f1","f2","f3"], "data": [[Infinity, 1, 2, 3]]}}',
    ),
    ("split-ragged-rows", JSON, split([ROW, ROW[:2]])),
    ("split-nested-values", JSON, split([[[1.0], 2.0, 3.0, 4.0]])),
    ("split-empty-data", JSON, split([])),
    ("split-data-not-list", JSON, split("nope")),
    ("split-is-list", JSON, json.dumps({"dataframe_split": [ROW]}).encode()),
    ("split-extra-key", JSON, split([ROW], FEATURES, orient="x")),
    ("split-duplicate-columns", JSON, split([[*ROW, 1.0]], [*FEATURES, "f0"])),
    (
        "split-with-params",
        JSON,
        json.dumps(
            {"dataframe_split": {"columns": FEATURES, "data": [ROW]}, "params": {"a": 1}}
        ).encode(),
    ),
    (
        "split-with-unknown-top-key",
        JSON,
        json.dumps({"dataframe_split": {"columns": FEATURES, "data": [ROW]}, "meta": 1}).encode(),
    ),
    ("records-one", JSON, records([rec(ROW)])),
    ("records-many", JSON, records([rec(r) for r in ROWS])),
    ("records-extra-key", JSON, records([{**rec(ROW), "extra": 1}])),
    ("records-missing-key", JSON, records([rec(ROW[:3], FEATURES[:3])])),
    ("records-string", JSON, records([rec([0.5, "x", 3.0, 0.0])])),
    ("records-empty", JSON, records([])),
    ("records-is-dict", JSON, json.dumps({"dataframe_records": rec(ROW)}).encode()),
    ("records-uneven", JSON, records([rec(ROW), {"f0": 1.0}])),
    ("instances-records", JSON, json.dumps({"instances": [rec(ROW), rec(ROWS[1])]}).encode()),
    ("instances-lists", JSON, json.dumps({"instances": [ROW]}).encode()),
    (
        "inputs-columns",
        JSON,
        json.dumps({"inputs": {f: [v] for f, v in zip(FEATURES, ROW, strict=True)}}).encode(),
    ),
    ("inputs-records", JSON, json.dumps({"inputs": [rec(ROW)]}).encode()),
    ("inputs-lists", JSON, json.dumps({"inputs": ROWS}).encode()),
    (
        "two-format-keys",
        JSON,
        json.dumps(
            {"dataframe_split": {"columns": FEATURES, "data": [ROW]}, "instances": [ROW]}
        ).encode(),
    ),
    ("no-format-key", JSON, json.dumps({"foo": 1}).encode()),
    ("top-level-list", JSON, json.dumps([ROW]).encode()),
    ("top-level-number", JSON, b"3"),
    ("invalid-json", JSON, b'{"dataframe_split": '),
    ("not-utf8", JSON, b'{"dataframe_split": "\xff\xfe"}'),
    ("empty-body-json", JSON, b""),
    ("charset-utf8", "application/json; charset=utf-8", split([ROW])),
    ("charset-latin1", "application/json; charset=latin-1", split([ROW])),
    ("unknown-ct-param", "application/json; format=pandas-split", split([ROW])),
    ("csv-good", "text/csv", f"{CSV_HEAD}\n0.5,-1.25,3.0,0.0\n1,2,3,4\n".encode()),
    ("csv-reordered", "text/csv", b"f3,f2,f1,f0\n0.0,3.0,-1.25,0.5\n"),
    ("csv-missing-column", "text/csv", b"f0,f1\n1,2\n"),
    ("csv-string-value", "text/csv", f"{CSV_HEAD}\n0.5,abc,3.0,0.0\n".encode()),
    ("csv-empty", "text/csv", b""),
    ("text-plain", "text/plain", split([ROW])),
    ("xml", "application/xml", b"<x/>"),
    ("form", "application/x-www-form-urlencoded", b"a=1"),
]


def _post(url: str, content_type: str | None, body: bytes) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(url + "/invocations", data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("content_type", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_same_answer_as_mlflow(
    servers: tuple[str, str], content_type: str | None, body: bytes
) -> None:
    ours_url, theirs_url = servers
    ours = _post(ours_url, content_type, body)
    theirs = _post(theirs_url, content_type, body)
    assert ours.status_code == theirs.status_code, (ours.text[:300], theirs.text[:300])
    if theirs.status_code == 200:
        assert ours.json() == theirs.json()
        # Same bytes as MLflow writes, not just the same values.
        assert ours.content == theirs.content
    else:
        assert ours.status_code in (400, 415) or ours.status_code == theirs.status_code
        if ours.headers["content-type"].startswith("application/json") and theirs.headers[
            "content-type"
        ].startswith("application/json"):
            assert ours.json().get("error_code") == theirs.json().get("error_code")


def test_cases_cover_success_and_both_error_classes(servers: tuple[str, str]) -> None:
    statuses = {_post(servers[0], ct, body).status_code for _id, ct, body in CASES}
    assert {200, 400, 415} <= statuses


def test_fast_path_answered_the_plain_numeric_requests(servers: tuple[str, str]) -> None:
    ours_url, _ = servers
    before = _fast_count(ours_url)
    for _ in range(5):
        assert _post(ours_url, JSON, split([ROW])).status_code == 200
    assert _fast_count(ours_url) == before + 5


def _fast_count(url: str) -> int:
    text = requests.get(url + "/metrics", timeout=10).text
    line = next(
        ln for ln in text.splitlines() if ln.startswith('lifecycle_predictions_total{path="fast"}')
    )
    return int(line.split()[-1])


def test_missing_content_type_is_415_not_a_server_error(servers: tuple[str, str]) -> None:
    # Deliberate difference: MLflow's server crashes on a missing Content-Type (HTTP 500).
    ours_url, theirs_url = servers
    ours = _post(ours_url, None, split([ROW]))
    theirs = _post(theirs_url, None, split([ROW]))
    assert ours.status_code == 415
    assert "Content-Type" in ours.json()["message"]
    assert theirs.status_code in (415, 500)


def test_ping_health_and_unknown_route(servers: tuple[str, str]) -> None:
    ours_url, theirs_url = servers
    for route in ("/ping", "/health"):
        ours = requests.get(ours_url + route, timeout=10)
        theirs = requests.get(theirs_url + route, timeout=10)
        assert ours.status_code == theirs.status_code == 200
    assert requests.get(ours_url + "/nope", timeout=10).status_code == 404
    assert requests.get(ours_url + "/invocations", timeout=10).status_code == 405


def test_azure_input_data_answers_bare_predictions(servers: tuple[str, str]) -> None:
    ours_url, theirs_url = servers
    expected = _post(theirs_url, JSON, split(ROWS)).json()["predictions"]
    azure_split = {
        "input_data": {"columns": FEATURES, "index": list(range(len(ROWS))), "data": ROWS}
    }
    got = requests.post(ours_url + "/invocations", json=azure_split, timeout=10)
    assert got.status_code == 200
    assert got.json() == expected  # no {"predictions": ...} wrapper, like Azure's server
    reordered = {"input_data": {"columns": FEATURES[::-1], "data": [r[::-1] for r in ROWS]}}
    assert requests.post(ours_url + "/invocations", json=reordered, timeout=10).json() == expected
    with_params = {**azure_split, "params": {}}
    assert requests.post(ours_url + "/invocations", json=with_params, timeout=10).json() == expected
    bad = requests.post(ours_url + "/invocations", json={"input_data": "nope"}, timeout=10)
    assert bad.status_code == 400
    assert "input_data" in bad.json()["message"]
