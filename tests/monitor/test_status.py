"""``status``: per workspace each model, its versions per stage and alias, deployments, flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lifecycle.base.deployments import record_deployment
from lifecycle.base.workspaces import load_config
from lifecycle.cli import cli
from lifecycle.monitor import attach_baseline
from lifecycle.monitor.monitor import monitor
from lifecycle.monitor.status import status
from lifecycle.registry.stages import transition
from tests.support.monitor_data import SHIFTED_CAT_P, fit_model, make_data, register, write_config

NAME = "loans"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """dev: ``loans`` v1 in Production (served, batch-scored, drifted), v2 in Staging."""
    root = tmp_path_factory.mktemp("status")
    cfg = write_config(root)
    ws = load_config(cfg).get("dev")
    train = make_data(3000, seed=40)
    v1 = register(ws, NAME, fit_model(train), train, root / "m1")
    v2 = register(ws, NAME, fit_model(train, C=0.05), train, root / "m2")
    transition(ws, NAME, v1, "Production")
    transition(ws, NAME, v2, "Staging", alias="challenger")
    record_deployment(ws, NAME, v1, "serving", "127.0.0.1:5001", {"workers": 2})
    record_deployment(ws, NAME, v1, "batch", str(root / "scored.csv"))
    attach_baseline(ws, NAME, v1, train, labels="y")
    drifted = root / "drifted.csv"
    make_data(3000, seed=41, x1_shift=1.0, cat_p=SHIFTED_CAT_P).to_csv(drifted, index=False)
    result = monitor(ws, f"models:/{NAME}/Production", [drifted])  # default policy: tag, exit
    assert result.exit_code == 3
    return {"root": root, "config": cfg, "v1": v1, "v2": v2, "monitor_run": result.run_id}


def test_status_shows_stages_deployments_and_flags(env: dict[str, Any]) -> None:
    out = status(load_config(env["config"]))
    by_ws = {w["name"]: w for w in out["workspaces"]}
    assert set(by_ws) == {"dev", "prod"}
    assert by_ws["prod"]["models"] == [] and "not been created" in by_ws["prod"]["note"]
    (model,) = by_ws["dev"]["models"]
    assert model["name"] == NAME
    assert model["stages"] == {"Production": [env["v1"]], "Staging": [env["v2"]]}
    assert model["aliases"] == {
        "production": env["v1"],
        "staging": env["v2"],
        "challenger": env["v2"],
    }
    v2, v1 = model["versions"]
    assert (v1["version"], v1["stage"], v1["aliases"]) == (env["v1"], "Production", ["production"])
    assert v2["aliases"] == ["challenger", "staging"]
    kinds = {(d["kind"], d["target"]) for d in v1["deployments"]}
    assert kinds == {("serving", "127.0.0.1:5001"), ("batch", str(env["root"] / "scored.csv"))}
    served = next(d for d in v1["deployments"] if d["kind"] == "serving")
    assert served["answering"] is False  # its /health does not answer
    assert v2["deployments"] == []
    assert v1["baseline"] is True and v2["baseline"] is False
    assert v1["monitor"]["run_id"] == env["monitor_run"] and v1["monitor"]["drift"] is True
    assert sorted(v1["monitor"]["drifted_features"]) == ["cat", "x1"]
    # needs_retraining restricts v1, and it still has a deployment record (issue #17)
    assert v1["flags"] == ["needs_retraining", "drift", "restricted (still deployed)"]
    assert v1["restricted"].startswith("it is flagged needs_retraining")
    assert v2["flags"] == [] and v2["monitor"] is None
    assert model["flags"] == [
        f"v{env['v1']}:drift",
        f"v{env['v1']}:needs_retraining",
        f"v{env['v1']}:restricted (still deployed)",
    ]


def test_status_cli_json_and_text(env: dict[str, Any]) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["--config", str(env["config"]), "status", "-w", "dev", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [w["name"] for w in data["workspaces"]] == ["dev"]
    res = runner.invoke(cli, ["--config", str(env["config"]), "status"])
    assert res.exit_code == 0, res.output
    # Nothing listens on 127.0.0.1:5001: the record stays, marked as a server that stopped.
    assert "serving:127.0.0.1:5001 (not answering)" in res.stdout
    assert "flags: needs_retraining,drift" in res.stdout
    assert "workspace prod" in res.stdout
    res = runner.invoke(cli, ["--config", str(env["config"]), "status", "-w", "nowhere"])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: Unknown workspace 'nowhere'")


def test_unreachable_workspace_is_reported_not_raised(tmp_path: Path) -> None:
    cfg = tmp_path / "lifecycle.yaml"
    cfg.write_text(
        yaml.safe_dump({"workspaces": {"down": {"tracking_uri": "http://127.0.0.1:9"}}}),
        encoding="utf-8",
    )
    (row,) = status(load_config(cfg), "down")["workspaces"]
    assert row["reachable"] is False and row["error"] and row["models"] == []


def test_azure_specs_written_without_apply_show_as_planned(
    env: dict[str, Any], tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["--config", str(env["config"])]
    res = runner.invoke(
        cli,
        [*base, "deploy", "azure-online", NAME, "--version", env["v2"], "--endpoint",
         "loans-rt", "--out", str(tmp_path / "specs"), "-w", "dev"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    text = runner.invoke(cli, [*base, "status", "-w", "dev"]).stdout
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"v{env['v2']} "))
    assert "azure-online:loans-rt/" in line
    assert f"(specs in {tmp_path / 'specs'}, not applied)" in line
    history = runner.invoke(cli, [*base, "history", NAME, "-w", "dev"]).stdout
    assert any(
        " deploy " in ln and "azure-online at loans-rt/" in ln for ln in history.splitlines()
    )
