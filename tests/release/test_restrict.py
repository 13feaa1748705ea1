"""Restricted versions (issue #17 item 6): a version a monitor flagged needs_retraining, or one
a release policy restricts (stale, archived, drift), is refused by serve, score and deploy
with one line naming the reason and the override; the override is recorded in the audit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import yaml
from click.testing import CliRunner, Result

from lifecycle.base.audit import read_history
from lifecycle.base.tags import NEEDS_RETRAINING_REASON_TAG, NEEDS_RETRAINING_TAG, RESTRICTED_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import save_logreg, scoring_frame
from tests.support.mlflow_server import free_port
from tests.support.procs import lifecycle


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _refused(result: Result, must: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and must in lines[0] and "--allow-restricted" in lines[0], lines


def test_a_version_flagged_needs_retraining_is_refused_unless_overridden(
    dev: Workspace, project_dir: Path, tmp_path: Path
) -> None:
    log_and_register(dev, save_logreg(tmp_path / "m"), "churn", experiment="t")
    client = dev.client()
    client.set_model_version_tag("churn", "1", NEEDS_RETRAINING_TAG, "true")
    client.set_model_version_tag("churn", "1", NEEDS_RETRAINING_REASON_TAG, "accuracy 0.61 < 0.8")
    scoring_frame(10).to_csv(project_dir / "in.csv", index=False)
    score = ["score", "models:/churn/1", "in.csv", "--output", "out.csv", "-w", "dev"]
    why = "it is flagged needs_retraining (accuracy 0.61 < 0.8)"
    _refused(_run(*score), why)
    assert not (project_dir / "out.csv").exists()
    _refused(
        _run("deploy", "azure-online", "churn", "--version", "1", "--endpoint", "e", "-w", "dev",
             "--out", "specs"),
        why,
    )  # fmt: skip
    assert not (project_dir / "specs").exists()
    served = lifecycle(project_dir, "serve", "models:/churn/1", "-w", "dev", "--port",
                       str(free_port()))  # fmt: skip
    assert served.returncode == 1 and why in served.stderr, served.stderr

    ok = _run(*score, "--allow-restricted")
    assert ok.exit_code == 0, ok.output
    assert len(pd.read_csv(project_dir / "out.csv")) == 10
    overrides = [e for e in read_history(dev, "churn") if e["action"] == "allow-restricted"]
    assert len(overrides) == 1 and overrides[0]["command"] == "score"
    assert overrides[0]["reason"] == why


def test_a_release_policy_restricts_stale_versions_and_holds_them_back(
    config: object, project_dir: Path, tmp_path: Path
) -> None:
    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump({"workspaces": {"dev": {}, "staging": {}, "prod": {}}})
    )
    from lifecycle.base.workspaces import load_config

    cfg = load_config()
    dev = cfg.get("dev")
    log_and_register(dev, save_logreg(tmp_path / "m"), "churn", experiment="t")
    policy = {
        "models": {
            "churn": {
                "source": "dev",
                "hops": [{"name": "staging", "to": "staging", "stage": "Staging"}],
                "restrict": {"flags": ["archived", "drift"], "stale_after": "2s"},
            }
        }
    }
    (project_dir / "release.yaml").write_text(yaml.safe_dump(policy))
    time.sleep(2.5)
    plan = json.loads(_run("release", "plan", "--json").output)
    assert [r["version"] for r in plan["restrictions"]] == ["1"]
    assert RESTRICTED_TAG not in (dev.client().get_model_version("churn", "1").tags or {})
    applied = _run("release", "apply")
    assert applied.exit_code == 0, applied.output
    assert "restrict churn v1 in 'dev': it is stale" in applied.output
    hop = json.loads(_run("release", "plan", "--json").output)["hops"][0]
    assert hop["state"] == "restricted" and "stale" in hop["detail"]
    assert not cfg.get("staging").client().search_registered_models()

    scoring_frame(5).to_csv(project_dir / "in.csv", index=False)
    _refused(_run("score", "models:/churn/1", "in.csv", "--output", "o.csv", "-w", "dev"), "stale")
    status = json.loads(_run("status", "-w", "dev", "--json").output)
    (ws_status,) = status["workspaces"]
    (model,) = [m for m in ws_status["models"] if m["name"] == "churn"]
    flags = [v["flags"] for v in model["versions"]]
    assert flags and "restricted" in flags[0]
    assert "nothing to do" in _run("release", "apply").output  # already marked
    events = [e["action"] for e in read_history(dev, "churn")]
    assert events.count("restrict") == 1


def test_a_restricted_stage_holder_is_rolled_back_and_a_following_server_swaps(
    project_dir: Path, tmp_path: Path
) -> None:
    """Drift restricts the Staging holder (v2); apply rolls Staging back to v1, and a real
    server following models:/churn/Staging swaps to v1 by itself."""
    import requests

    from lifecycle.base.tags import MONITOR_LAST_TAG
    from lifecycle.base.workspaces import load_config
    from lifecycle.cli.background import start_background
    from lifecycle.registry.stages import transition

    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump({"workspaces": {"dev": {}, "staging": {}}})
    )
    staging = load_config().get("staging")
    for i in (1, 2):
        log_and_register(staging, save_logreg(tmp_path / f"m{i}"), "churn", experiment="t",
                         force=True)  # fmt: skip
        transition(staging, "churn", str(i), "Staging")
    policy = {
        "models": {
            "churn": {
                "source": "dev",
                "hops": [{"name": "staging", "to": "staging", "stage": "Staging"}],
                "restrict": {"flags": ["drift"]},
            }
        }
    }
    (project_dir / "release.yaml").write_text(yaml.safe_dump(policy))
    with start_background(
        "models:/churn/Staging", workspace="staging", cwd=project_dir,
        extra_args=["--poll-interval", "0.5"],
    ) as server:  # fmt: skip
        assert requests.get(server.url + "/version", timeout=10).json()["version"] == "2"
        staging.client().set_model_version_tag(
            "churn", "2", MONITOR_LAST_TAG, json.dumps({"drift": True, "rows": 100})
        )
        applied = _run("release", "apply")
        assert applied.exit_code == 0, applied.output
        assert "restrict churn v2 in 'staging': its last monitor run found drift" in applied.output
        assert "Staging: rolled back to v1" in applied.output
        deadline = time.monotonic() + 60
        version = None
        while time.monotonic() < deadline:
            version = requests.get(server.url + "/version", timeout=10).json()["version"]
            if version == "1":
                break
            time.sleep(0.25)
        assert version == "1"
    holders = [str(v.version) for v in staging.client().search_model_versions("name='churn'")
               if v.current_stage == "Staging"]  # fmt: skip
    assert holders == ["1"]
