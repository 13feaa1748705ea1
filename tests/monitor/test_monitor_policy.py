"""Monitoring policies: thresholds from YAML, and every action really happening and recorded.

The retraining action runs a real (tiny) MLproject through ``mlflow.projects.run`` with the
local environment manager; the rollback moves real registry stages and aliases.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifecycle.base.audit import read_history
from lifecycle.base.errors import ConfigError
from lifecycle.base.refs import resolve_model
from lifecycle.base.workspaces import Workspace, load_config
from lifecycle.monitor import attach_baseline, load_policy
from lifecycle.monitor.monitor import monitor
from lifecycle.registry.stages import transition
from tests.support.monitor_data import SHIFTED_CAT_P, fit_model, make_data, register, write_config

NAME = "fraud"
TRAIN_SCRIPT = """\
import sys
import mlflow

model, version, out = sys.argv[1:4]
with mlflow.start_run():  # resumes the run `mlflow run` created
    mlflow.log_param("retrained_from", f"{model} v{version}")
    mlflow.log_metric("retrained", 1.0)
with open(out, "a", encoding="utf-8") as fh:
    fh.write(f"{model} {version}\\n")
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``fraud`` v1 (archived after v2) and v2 (Production, with a baseline); a tiny MLproject."""
    root = tmp_path_factory.mktemp("policy")
    ws = load_config(write_config(root)).get("dev")
    train = make_data(6000, seed=20)
    v1 = register(ws, NAME, fit_model(train, C=1.0), train, root / "m1")
    v2 = register(ws, NAME, fit_model(train, C=0.05), train, root / "m2")
    transition(ws, NAME, v1, "Production")
    transition(ws, NAME, v2, "Production")
    attach_baseline(ws, NAME, v2, train, labels="y")
    project = root / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN_SCRIPT, encoding="utf-8")
    (project / "MLproject").write_text(
        yaml.safe_dump(
            {
                "name": "retrain-demo",
                "entry_points": {
                    "retrain": {
                        "parameters": {
                            "model": {"type": "string"},
                            "version": {"type": "string"},
                            "out": {"type": "string"},
                        },
                        "command": f"{sys.executable} train.py {{model}} {{version}} {{out}}",
                    },
                    "broken": {"command": f"{sys.executable} -c 'raise SystemExit(4)'"},
                },
            }
        ),
        encoding="utf-8",
    )
    drifted = root / "drifted.csv"
    make_data(6000, seed=21, x1_shift=1.0, cat_p=SHIFTED_CAT_P).to_csv(drifted, index=False)
    return {"root": root, "ws": ws, "v1": v1, "v2": v2, "project": project, "drifted": drifted}


def _policy(env: dict[str, Any], name: str, body: dict[str, Any]) -> Path:
    path = env["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def _events(ws: Workspace, run_id: str | None) -> list[dict[str, Any]]:
    return [
        e
        for e in read_history(ws, NAME)
        if e.get("monitor_run_id") == run_id and e.get("action") != "gate"
    ]


def test_every_action_happens_and_is_recorded(env: dict[str, Any]) -> None:
    ws: Workspace = env["ws"]
    out = env["root"] / "retrained.txt"
    policy = _policy(
        env,
        "all",
        {
            "thresholds": {"psi": 0.2, "metric_drop": {"accuracy": 0.05}},
            "actions": [
                "tag",
                "rollback",
                {
                    "retrain": {
                        "uri": str(env["project"]),
                        "entry_point": "retrain",
                        "parameters": {"model": "{model}", "version": "{version}", "out": str(out)},
                        "experiment": "retraining",
                    }
                },
                "exit",
            ],
        },
    )
    result = monitor(ws, f"models:/{NAME}/Production", [env["drifted"]], policy=policy)
    assert result.version == env["v2"] and result.drift
    assert [(a["action"], a["status"]) for a in result.actions] == [
        ("tag", "done"),
        ("rollback", "done"),
        ("retrain", "done"),
        ("exit", "done"),
    ]
    assert result.exit_code == 3
    client = ws.client()
    # tag
    v2 = client.get_model_version(NAME, env["v2"])
    assert v2.tags["needs_retraining"] == "true"
    assert "feature x1" in v2.tags["lifecycle.needs_retraining.reason"]
    # rollback: v2 archived, v1 holds Production again (stage and alias)
    assert v2.current_stage == "Archived"
    assert resolve_model(ws, f"models:/{NAME}/Production").version == env["v1"]
    assert str(client.get_model_version_by_alias(NAME, "production").version) == env["v1"]
    # retrain: a real mlflow run of the project's entry point, in this workspace
    retrain = result.actions[2]
    run = client.get_run(retrain["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["retrained_from"] == f"{NAME} v{env['v2']}"
    assert client.get_experiment(run.info.experiment_id).name == "retraining"
    assert out.read_text(encoding="utf-8") == f"{NAME} {env['v2']}\n"
    # audit: one event per action, in order, tied to the monitor run
    events = _events(ws, result.run_id)
    assert [e["action"] for e in events] == ["monitor", "tag", "rollback", "retrain", "exit"]
    rollback = events[2]
    assert (rollback["from_version"], rollback["to_version"], rollback["to_stage"]) == (
        env["v2"],
        env["v1"],
        "Production",
    )
    assert events[3]["run_id"] == retrain["run_id"] and events[3]["status"] == "done"
    assert events[4]["exit_code"] == 3


def test_actions_that_cannot_run_are_reported_and_recorded(env: dict[str, Any]) -> None:
    ws: Workspace = env["ws"]
    attach_baseline(ws, NAME, env["v1"], make_data(2000, seed=22))
    policy = _policy(
        env,
        "fails",
        {
            "actions": [
                {"rollback": {"stage": "Staging"}},  # v1 holds Production, not Staging
                {"retrain": {"uri": str(env["project"]), "entry_point": "broken"}},
            ]
        },
    )
    result = monitor(ws, f"models:/{NAME}/{env['v1']}", [env["drifted"]], policy=policy)
    assert [(a["action"], a["status"]) for a in result.actions] == [
        ("rollback", "skipped"),
        ("retrain", "failed"),
    ]
    assert result.exit_code == 0  # no `exit` action in this policy
    assert resolve_model(ws, f"models:/{NAME}/Production").version == env["v1"]  # untouched
    events = _events(ws, result.run_id)
    assert [(e["action"], e["status"]) for e in events[1:]] == [
        ("rollback", "skipped"),
        ("retrain", "failed"),
    ]
    assert "does not hold stage Staging" in events[1]["reason"]


def test_thresholds_from_the_policy_decide(env: dict[str, Any]) -> None:
    lenient = _policy(
        env, "lenient", {"thresholds": {"psi": 5.0, "min_effect": 0.9, "prediction_psi": 5.0}}
    )
    result = monitor(env["ws"], f"models:/{NAME}/{env['v1']}", [env["drifted"]], policy=lenient)
    assert result.drift is False and result.actions == []
    assert result.policy["thresholds"]["psi"] == 5.0


def test_default_policy_and_invalid_policies(env: dict[str, Any]) -> None:
    default = load_policy(None)
    assert [a.kind for a in default.actions] == ["tag", "exit"]
    assert default.thresholds.psi == 0.25 and default.thresholds.metric_drop["accuracy"] == 0.05
    cases = {
        "t1": ({"thresholds": {"psii": 0.2}}, "unknown threshold 'psii'. Allowed: chi2_pvalue"),
        "t2": ({"thresholds": {"psi": "high"}}, "threshold 'psi' must be a number, got 'high'"),
        "t3": ({"actions": [{"retrain": {"uri": "."}}]}, "action 'retrain' needs an 'entry_point'"),
        "t4": ({"actions": [{"rollback": {"to": 1}}]}, "unknown option(s) to of action 'rollback'"),
        "t5": ({"when": "always"}, "unknown key(s) when. Allowed: actions, thresholds"),
        # issue #22 item 4: `uri: .` is the policy's own folder, which here is no project
        "t6": (
            {"actions": [{"retrain": {"uri": ".", "entry_point": "train"}}]},
            f"retrain uri '.' ({env['root']}, relative to the policy's folder) is not an "
            "MLflow project",
        ),
        "t7": (
            {"actions": [{"retrain": {"uri": "project", "entry_point": "train"}}]},
            "has no entry point 'train'; its MLproject declares: broken, retrain",
        ),
    }
    for name, (body, message) in cases.items():
        with pytest.raises(ConfigError) as err:
            load_policy(_policy(env, name, body))
        assert message in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(env["root"] / "missing.yaml")


def test_retrain_from_the_users_folder_trains_into_the_monitored_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #22 item 4, as the README shows it: the policy sits in the project folder
    (``uri: .``, the toolkit's own ``train`` entry point, ``workspace: "{workspace}"``) while
    the user monitors from their own folder with the embedded workspaces. The retrained
    model's run must land in the monitored store, not in a ``.lifecycle`` of the project."""
    from click.testing import CliRunner

    from lifecycle.cli import cli

    repo = Path(__file__).resolve().parents[2]
    project = tmp_path / "project"
    project.mkdir()
    for name in ("MLproject", "conda.yaml"):
        (project / name).write_text((repo / name).read_text(encoding="utf-8"), encoding="utf-8")
    policy = project / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "actions": [
                    {
                        "retrain": {
                            "uri": ".",
                            "entry_point": "train",
                            "parameters": {"workspace": "{workspace}", "out_dir": "retrained"},
                        }
                    },
                    "exit",
                ]
            }
        ),
        encoding="utf-8",
    )
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.chdir(user)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    ws = load_config().get("prod")
    train = make_data(2000, seed=30)
    version = register(ws, NAME, fit_model(train, C=1.0), train, user / "m")
    attach_baseline(ws, NAME, version, train, labels="y")
    drifted = user / "drifted.csv"
    make_data(2000, seed=31, x1_shift=1.0, cat_p=SHIFTED_CAT_P).to_csv(drifted, index=False)

    out = CliRunner().invoke(
        cli,
        [
            "monitor",
            f"models:/{NAME}/{version}",
            "-w",
            "prod",
            "--input",
            str(drifted),
            "--policy",
            str(policy),
        ],
    )
    assert out.exit_code == 3, out.output
    assert "action retrain: done" in out.output, out.output
    experiments = [e.experiment_id for e in ws.client().search_experiments()]
    runs = ws.client().search_runs(experiments, "params.dataset = 'breast_cancer'")
    assert runs, "no run of `lifecycle train` in the monitored workspace"
    assert all(r.data.metrics["accuracy"] > 0.9 for r in runs)
    assert not (project / ".lifecycle").exists()
