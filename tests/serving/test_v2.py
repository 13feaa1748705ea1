"""The Open Inference Protocol (V2 REST) on ``lifecycle serve``, over real HTTP against real
servers: health, metadata from the signature, infer on the fast path (a scikit-learn model)
and on the general path (a models-from-code pyfunc), answers equal to the MLflow payload's,
and the protocol's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from lifecycle.base.workspaces import local_workspace
from lifecycle.cli.background import BackgroundServer, start_background
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import save_code_model
from tests.support.serving_models import numeric_frame, save_logreg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("v2")
    ws = local_workspace("dev", root / ".lifecycle")
    log_and_register(ws, save_logreg(root / "m"), "churn", experiment="t")
    with start_background("models:/churn/1", workspace="dev", cwd=root) as srv:
        yield srv


def test_health_and_metadata(server: BackgroundServer) -> None:
    assert requests.get(server.url + "/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(server.url + "/v2/health/ready", timeout=10).json() == {"ready": True}
    assert requests.get(server.url + "/v2", timeout=10).json()["name"] == "mlflow-lifecycle"
    meta = requests.get(server.url + "/v2/models/churn", timeout=10).json()
    assert meta["name"] == "churn" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {
            "name": f"f{i}",
            "datatype": "FP64",
            "shape": [-1, 1],
            "parameters": {"content_type": "np"},
        }
        for i in range(4)
    ]
    ready = requests.get(server.url + "/v2/models/churn/versions/1/ready", timeout=10)
    assert ready.json() == {"name": "churn", "ready": True}


def _mlflow_predictions(server: BackgroundServer, frame: object) -> list[object]:
    body = {"dataframe_split": frame.to_dict(orient="split")}  # type: ignore[attr-defined]
    return requests.post(server.url + "/invocations", json=body, timeout=30).json()["predictions"]


def test_infer_per_column_and_as_one_matrix_equals_the_mlflow_payload(
    server: BackgroundServer,
) -> None:
    frame = numeric_frame(7, seed=3)
    expected = _mlflow_predictions(server, frame)
    per_column = {
        "id": "req-1",
        "inputs": [
            {"name": c, "shape": [7], "datatype": "FP64", "data": frame[c].tolist()}
            for c in frame.columns
        ],
    }
    matrix = {
        "inputs": [
            {"name": "x", "shape": [7, 4], "datatype": "FP64", "data": frame.values.tolist()}
        ]
    }
    for body, url in ((per_column, "/v2/models/churn/infer"),
                      (matrix, "/v2/models/churn/versions/1/infer")):  # fmt: skip
        resp = requests.post(server.url + url, json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["model_name"] == "churn" and doc["model_version"] == "1"
        (out,) = doc["outputs"]
        assert out["name"] == "output-1" and out["shape"] == [7, 1] and out["datatype"] == "INT64"
        assert out["parameters"] == {"content_type": "np"}
        assert doc["parameters"] == {"content_type": "np"}
        assert out["data"] == expected
    assert requests.post(server.url + "/v2/models/churn/infer", json=per_column,
                         timeout=30).json()["id"] == "req-1"  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/v2/models/other/infer", {"inputs": []}, 404, "Model 'other' is not served"),
        ("POST", "/v2/models/churn/versions/9/infer", {}, 404, "'churn' version 9"),
        ("GET", "/v2/models/churn/infer", None, 405, "Use POST"),
        ("POST", "/v2/models/churn/infer", {"inputs": []}, 400, "non-empty 'inputs'"),
        (
            "POST",
            "/v2/models/churn/infer",
            {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1] * 6}]},
            400,
            "expected [rows, 4]",
        ),
        (
            "POST",
            "/v2/models/churn/infer",
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1] * 7}]},
            400,
            "7 values for shape [2, 4]",
        ),
        (
            "POST",
            "/v2/models/churn/infer",
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ["a", 1, 2, 3]}
                ]
            },
            400,
            "data are not FP64",
        ),
        ("GET", "/v2/nothing", None, 404, "No V2 route"),
    ],
)
def test_protocol_errors(
    server: BackgroundServer, method: str, path: str, body: object, status: int, says: str
) -> None:
    resp = requests.request(method, server.url + path, json=body, timeout=30)
    assert resp.status_code == status, resp.text
    message = resp.json()["error"]
    assert says in message and "\n" not in message


def test_infer_on_the_general_path(tmp_path: Path) -> None:
    """A models-from-code pyfunc has no fast path: V2 goes through pyfunc (2*f0 + n)."""
    model = save_code_model(tmp_path / "code")
    with start_background(str(model), cwd=tmp_path, extra_args=["--no-record"]) as srv:
        assert requests.get(srv.url + "/version", timeout=10).json()["fast_path"] is False
        body = {
            "inputs": [
                {"name": "f0", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0, 3.5]},
                {"name": "f1", "shape": [3], "datatype": "FP64", "data": [0.0, 0.0, 0.0]},
                {"name": "f2", "shape": [3], "datatype": "FP64", "data": [0.0, 0.0, 0.0]},
                {"name": "n", "shape": [3, 1], "datatype": "INT64", "data": [[1], [2], [3]]},
            ]
        }
        resp = requests.post(srv.url + "/v2/models/model/infer", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        (out,) = resp.json()["outputs"]
        np.testing.assert_allclose(out["data"], [3.0, 6.0, 10.0])
        assert out["datatype"] == "FP64" and out["shape"] == [3, 1]


def _predictions_total(server: BackgroundServer) -> dict[str, int]:
    text = requests.get(server.url + "/metrics", timeout=10).text
    out = {}
    for path in ("fast", "general"):
        line = next(ln for ln in text.splitlines() if f'predictions_total{{path="{path}"}}' in ln)
        out[path] = int(float(line.split()[-1]))
    return out


def test_plain_numeric_infer_is_batched_on_the_fast_path_and_the_rest_is_not(
    server: BackgroundServer,
) -> None:
    """The fast path takes a V2 request only when it decodes exactly as the general path
    would; what it does not take still gets the general path's answer."""
    frame = numeric_frame(5, seed=11)
    expected = _mlflow_predictions(server, frame)

    def tensors(**extra: object) -> list[dict[str, object]]:
        return [
            {"name": c, "shape": [5], "datatype": "FP64", "data": frame[c].tolist(), **extra}
            for c in frame.columns
        ]

    def infer(body: dict[str, object]) -> dict[str, object]:
        resp = requests.post(server.url + "/v2/models/churn/infer", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    before = _predictions_total(server)
    as_ints = [{**t, "datatype": "INT64", "data": [1, 0, -2, 3, 4]} for t in tensors()]
    for body in ({"inputs": tensors()}, {"id": "x", "inputs": as_ints}):
        doc = infer(body)
        assert doc["outputs"][0]["shape"] == [5, 1]
    after_fast = _predictions_total(server)
    assert after_fast["fast"] - before["fast"] == 2
    assert after_fast["general"] == before["general"]
    assert infer({"inputs": tensors()})["outputs"][0]["data"] == expected

    # A content type on a numeric input decodes to the same numbers (the general path
    # ignores it too): the fast path. Request parameters or a missing value: the general path.
    assert (
        infer({"inputs": tensors(parameters={"content_type": "np"})})["outputs"][0]["data"]
        == expected
    )
    with_nan = tensors()
    with_nan[0] = {**with_nan[0], "data": [None, *frame["f0"].tolist()[1:]]}
    general = [{"inputs": tensors(), "parameters": {"content_type": "pd"}}]
    for body in general:
        assert infer(body)["outputs"][0]["data"] == expected
    nan_frame = frame.copy()
    nan_frame.loc[0, "f0"] = np.nan
    mlflow_nan = requests.post(
        server.url + "/invocations",
        data=json.dumps({"dataframe_split": nan_frame.to_dict(orient="split")}),  # NaN token
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    # LogisticRegression refuses NaN: through pyfunc on both payloads, never the fast path
    # (whose arithmetic would answer a label for it).
    assert mlflow_nan.status_code == 400, mlflow_nan.text
    v2_nan = requests.post(
        server.url + "/v2/models/churn/infer", json={"inputs": with_nan}, timeout=30
    )
    assert v2_nan.status_code == 400, v2_nan.text
    assert "contains NaN" in v2_nan.json()["error"] and "\n" not in v2_nan.json()["error"]
    after = _predictions_total(server)
    assert after["fast"] == after_fast["fast"] + 2  # the equality check and the content type
    assert after["general"] - after_fast["general"] == 3  # 2 V2 + the MLflow payload with NaN
