"""Monitoring against a real ``mlflow server`` workspace: the baseline travels over HTTP
(proxied artifacts), monitor runs and tags land on the server, status reads them back."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lifecycle.base.workspaces import load_config
from lifecycle.monitor import attach_baseline, load_baseline
from lifecycle.monitor.monitor import monitor
from lifecycle.monitor.status import status
from tests.support.monitor_data import SHIFTED_CAT_P, fit_model, make_data, register


@pytest.mark.slow
def test_monitor_and_status_on_a_real_server(config_with_remote: Path, tmp_path: Path) -> None:
    config = load_config(config_with_remote)
    remote = config.get("remote")
    name = f"remote-{uuid.uuid4().hex[:8]}"
    train = make_data(3000, seed=50)
    version = register(remote, name, fit_model(train), train, tmp_path / "model")
    profile = attach_baseline(remote, name, version, train, labels="y")
    assert load_baseline(remote, name, version)["metrics"] == profile["metrics"]
    drifted = tmp_path / "drifted.csv"
    make_data(3000, seed=51, x1_shift=1.0, cat_p=SHIFTED_CAT_P).to_csv(drifted, index=False)
    result = monitor(remote, f"models:/{name}/{version}", [drifted], labels="y")
    assert result.drift and result.exit_code == 3
    assert {f["name"] for f in result.features if f["drift"]} == {"x1", "cat"}
    (row,) = status(config, "remote")["workspaces"]
    assert row["reachable"] is True
    (model,) = [m for m in row["models"] if m["name"] == name]
    (v,) = model["versions"]
    assert v["baseline"] is True and v["monitor"]["run_id"] == result.run_id
    # needs_retraining also restricts the version (issue #17); no deployment record here
    assert v["flags"] == ["needs_retraining", "drift", "restricted"]
