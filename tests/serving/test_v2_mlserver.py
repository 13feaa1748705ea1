"""Differential test of the Open Inference Protocol: the same V2 requests sent to
``lifecycle serve`` and to MLServer 1.7 with its MLflow runtime (``mlserver_mlflow``), both
serving the same MLflow model directory, and their answers compared field by field.

MLServer runs in its own cached environment (``tests/support/peers.lock``: MLServer's pins
cannot share the toolkit's environment), as a real ``mlserver start`` process over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from lifecycle.cli.background import free_port, start_background
from tests.support.batch_models import save_code_model
from tests.support.real.envs import ensure_env
from tests.support.serving_models import numeric_frame, save_logreg

pytestmark = pytest.mark.slow

MODELS = {
    "logreg": lambda p: save_logreg(p),  # scikit-learn: ndarray of labels (np codec)
    "frame": lambda p: save_code_model(p, designer_style=True, with_outputs=True),  # DataFrame
    "series": lambda p: save_code_model(p, with_outputs=True),  # a Series of floats
}


class Pair:
    """The same model behind both servers."""

    def __init__(self, ours: str, theirs: str, name: str) -> None:
        self.ours, self.theirs, self.name = ours, theirs, name

    def both(self, method: str, path: str, body: Any = None) -> tuple[Any, Any]:
        answers = []
        for base in (self.ours, self.theirs):
            resp = requests.request(method, base + path, json=body, timeout=60)
            try:
                answers.append((resp.status_code, resp.json() if resp.content else None))
            except ValueError:
                answers.append((resp.status_code, resp.text[-1500:]))
        return answers[0], answers[1]


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    kind = request.param
    root = tmp_path_factory.mktemp(f"v2diff-{kind}")
    model = MODELS[kind](root / "model")
    env = ensure_env("peers")
    settings = root / "mlserver"
    (settings / "m").mkdir(parents=True)
    http, grpc, metrics = free_port(), free_port(), free_port()
    (settings / "settings.json").write_text(json.dumps(
        {"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": 0}
    ))  # fmt: skip
    (settings / "m" / "model-settings.json").write_text(json.dumps({
        "name": kind, "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model), "version": "1"},
    }))  # fmt: skip
    log = (root / "mlserver.log").open("w")
    theirs = subprocess.Popen(
        [str(env / "bin" / "mlserver"), "start", str(settings)], cwd=root, stdout=log, stderr=log
    )
    try:
        url = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 180
        while True:
            assert theirs.poll() is None, (root / "mlserver.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/v2/models/{kind}/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "MLServer not ready in 180 s"
            time.sleep(0.3)
        with start_background(
            str(model), cwd=root, extra_args=["--name", kind, "--model-version", "1",
                                             "--trust-pickle"],
        ) as ours:  # fmt: skip
            yield Pair(ours.url, url, kind)
    finally:
        theirs.terminate()
        theirs.wait(30)
        log.close()


def _requests(pair: Pair) -> list[dict[str, Any]]:
    frame = numeric_frame(6, seed=5, columns=["f0", "f1", "f2", "f3"])
    if pair.name != "logreg":
        frame = frame[["f0", "f1", "f2"]].assign(n=[1, 2, 3, -4, 0, 7])
    dtypes = {c: ("INT64" if str(frame[c].dtype).startswith("int") else "FP64") for c in frame}
    per_column = [
        {"name": c, "shape": [len(frame)], "datatype": dtypes[c], "data": frame[c].tolist()}
        for c in frame.columns
    ]
    as_columns_2d = [{**t, "shape": [len(frame), 1]} for t in per_column]
    one_row = [{**t, "shape": [1], "data": t["data"][:1]} for t in per_column]
    return [
        {"id": "a", "inputs": per_column},
        {"id": "b", "inputs": as_columns_2d},
        {"id": "c", "inputs": one_row},
    ]


def test_infer_answers_equal_mlservers(pair: Pair) -> None:
    for body in _requests(pair):
        (code_ours, ours), (code_theirs, theirs) = pair.both(
            "POST", f"/v2/models/{pair.name}/versions/1/infer", body
        )
        if pair.name == "series":
            # MLServer 1.7.1 cannot encode a pandas Series answer (its MLflow runtime walks
            # it as a list: "'float' object has no attribute 'dtype'", HTTP 500). Here it is
            # one FP64 tensor of shape [N, 1], the np codec's form for a 1-D array.
            assert code_theirs == 500 and "dtype" in str(theirs), theirs
            assert code_ours == 200, ours
            n = body["inputs"][0]["shape"][0]
            f0 = next(t["data"] for t in body["inputs"] if t["name"] == "f0")
            nn = next(t["data"] for t in body["inputs"] if t["name"] == "n")
            [out] = ours["outputs"]
            assert (out["shape"], out["datatype"]) == ([n, 1], "FP64")
            assert out["data"] == pytest.approx([2 * a + b for a, b in zip(f0, nn, strict=True)])
            continue
        assert (code_ours, code_theirs) == (200, 200), (ours, theirs)
        assert ours == theirs, f"request {body['id']}:\n ours   {ours}\n theirs {theirs}"


def test_metadata_describes_the_inputs_as_mlserver_does(pair: Pair) -> None:
    (code_ours, ours), (code_theirs, theirs) = pair.both("GET", f"/v2/models/{pair.name}")
    assert code_ours == code_theirs == 200
    assert ours["name"] == theirs["name"]
    assert ours["inputs"] == theirs["inputs"]
    assert ours["parameters"] == theirs["parameters"]
    # Outputs: the same tensors, except that an unnamed one is 'output-1' here, as infer
    # names it (MLServer's metadata says 'output-0' and its infer answers 'output-1').
    strip = [{k: v for k, v in o.items() if k != "name"} for o in ours["outputs"]]
    assert strip == [{k: v for k, v in o.items() if k != "name"} for o in theirs["outputs"]]


def test_health_and_readiness_agree(pair: Pair) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{pair.name}/ready"):
        (code_ours, _), (code_theirs, _) = pair.both("GET", path)
        assert code_ours == code_theirs == 200, path


def test_an_unknown_model_is_404_on_both(pair: Pair) -> None:
    (code_ours, ours), (code_theirs, theirs) = pair.both(
        "POST", "/v2/models/nope/infer", _requests(pair)[0]
    )
    assert code_ours == code_theirs == 404
    assert "error" in ours and "error" in theirs
