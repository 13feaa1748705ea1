"""Release automation (issue #17) on three real local workspaces (dev, staging, prod): the
policy file's validation, plan, apply, approvals, soak, gates, and scheduled jobs run at most
once per slot across restarts and two controllers (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result

from lifecycle.base.audit import read_history
from lifecycle.base.workspaces import Config, load_config
from lifecycle.cli import cli
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import save_logreg, scoring_frame
from tests.support.procs import together

HOPS: list[dict[str, Any]] = [
    {"name": "staging", "to": "staging", "stage": "Staging", "gates": ["accuracy>=0.9"]},
    {"name": "prod", "to": "prod", "stage": "Production", "approval": "required"},
]


@pytest.fixture
def project(project_dir: Path) -> Path:
    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump({"workspaces": {"dev": {}, "staging": {}, "prod": {}}})
    )
    return project_dir


@pytest.fixture
def config(project: Path) -> Config:
    return load_config()


def _policy(project: Path, hops: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    body: dict[str, Any] = {"source": "dev", "hops": HOPS if hops is None else hops, **extra}
    path = project / "release.yaml"
    path.write_text(yaml.safe_dump({"models": {"churn": body}}, sort_keys=False))
    return path


def _register(config: Config, tmp_path: Path, accuracy: float = 0.95) -> str:
    model = save_logreg(tmp_path / f"m{time.monotonic_ns()}")
    return log_and_register(
        config.get("dev"), model, "churn", experiment="t", metrics={"accuracy": accuracy},
        trust_pickle=True, force=True,
    ).version  # fmt: skip


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _plan(*extra: str) -> dict[str, dict[str, Any]]:
    result = _run("release", "plan", "--json", *extra)
    assert result.exit_code == 0, result.output
    return {h["hop"]: h for h in json.loads(result.output)["hops"]}


def _stage_holder(config: Config, ws: str, stage: str) -> list[str]:
    try:
        versions = config.get(ws).client().search_model_versions("name='churn'")
    except Exception:
        return []
    return [str(v.version) for v in versions if v.current_stage == stage]


def test_dev_to_staging_then_prod_after_approval_and_a_second_apply_changes_nothing(
    project: Path, config: Config, tmp_path: Path
) -> None:
    _policy(project)
    _register(config, tmp_path)
    plan = _plan()
    assert plan["staging"]["state"] == "ready" and plan["staging"]["version"] == "1"
    assert [g["passed"] for g in plan["staging"]["gates"]] == [True, True]  # metric, smoke
    assert plan["prod"]["state"] == "no-candidate"
    assert _stage_holder(config, "staging", "Staging") == []  # plan changed nothing

    applied = _run("release", "apply")
    assert applied.exit_code == 0, applied.output
    assert "done: churn staging: dev v1 -> staging v1" in applied.output
    assert _stage_holder(config, "staging", "Staging") == ["1"]
    plan = _plan()
    assert plan["prod"]["state"] == "waiting-approval"
    assert "lifecycle release approve churn 1 --hop prod" in plan["prod"]["detail"]

    again = _run("release", "apply")
    assert "nothing to do" in again.output and _stage_holder(config, "prod", "Production") == []

    # "waiting": the version that waits at that hop now (what the exported CI jobs use)
    approved = _run("release", "approve", "churn", "waiting", "--hop", "prod", "--comment", "ok")
    assert approved.exit_code == 0, approved.output
    assert (
        "approved churn v1 (from 'staging') for hop 'prod', recorded in 'prod'" in approved.output
    )
    assert "done: churn prod: staging v1 -> prod v1" in _run("release", "apply").output
    assert _stage_holder(config, "prod", "Production") == ["1"]
    assert "nothing to do" in _run("release", "apply").output

    digest = json.loads(_run("release", "plan", "--json").output)["digest"]
    events = [e for e in read_history(config.get("prod"), "churn") if e["action"] == "release"]
    assert len(events) == 1 and events[0]["release_digest"] == digest
    approvals = [e for e in read_history(config.get("prod"), "churn") if e["action"] == "approve"]
    assert approvals[0]["approver"] == "pytest" and approvals[0]["comment"] == "ok"


def test_a_rejected_version_stays_out_and_a_new_one_moves_on(
    project: Path, config: Config, tmp_path: Path
) -> None:
    _policy(project)
    _register(config, tmp_path)
    _run("release", "apply")
    rejected = _run("release", "reject", "churn", "1", "--hop", "prod", "--comment", "bias")
    assert rejected.exit_code == 0, rejected.output
    assert _plan()["prod"]["state"] == "rejected"
    assert "nothing to do" in _run("release", "apply", "--auto-approve").output
    assert _stage_holder(config, "prod", "Production") == []

    _register(config, tmp_path)  # v2 in dev: staging takes it, prod waits for its approval
    out = _run("release", "apply", "--auto-approve").output
    assert "churn staging: dev v2 -> staging v2" in out
    assert "churn prod: staging v2 -> prod v1" in out  # auto-approved, recorded as such
    auto = [e for e in read_history(config.get("prod"), "churn") if e["action"] == "approve"]
    assert auto[-1]["comment"] == "--auto-approve" and auto[-1]["source_version"] == "2"


def test_failing_gates_and_soak_hold_a_hop(project: Path, config: Config, tmp_path: Path) -> None:
    hops = [
        {"name": "staging", "to": "staging", "stage": "Staging", "gates": ["accuracy>=0.99"]},
    ]
    _policy(project, hops)
    _register(config, tmp_path, accuracy=0.95)
    plan = _plan()
    assert plan["staging"]["state"] == "gates-failed"
    assert "accuracy>=0.99" in plan["staging"]["detail"]
    assert "nothing to do" in _run("release", "apply").output

    _policy(project, [{**hops[0], "gates": [], "soak": "1h"}])
    plan = _plan()
    assert plan["staging"]["state"] == "soaking" and 3500 < plan["staging"]["soak_left_s"] <= 3600
    assert _stage_holder(config, "staging", "Staging") == []


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"source": "qa", "hops": []}, "release.yaml:4: models.churn.source: unknown workspace 'qa'"),
        ({"source": "dev", "hopz": []}, "release.yaml:5: models.churn.hopz: unknown key"),
        (
            {"source": "dev", "hops": [{"name": "s", "to": "staging", "stage": "Stagin"}]},
            "models.churn.hops[0].stage: 'Stagin' is not a stage",
        ),
        (
            {"source": "dev", "hops": [{"name": "s", "to": "staging", "stage": "Staging",
                                        "soak": "1 day"}]},
            "models.churn.hops[0].soak: '1 day' is not a duration",
        ),
        (
            {"source": "dev", "hops": [], "batch": [{"name": "n", "workspace": "prod",
             "model": "models:/churn/Production", "input": "x", "output": "y",
             "schedule": "every night"}]},
            "models.churn.batch[0].schedule: 'every night' is not a cron expression",
        ),
        (
            {"source": "dev", "hops": [{"name": "s", "to": "staging", "stage": "Staging",
                                        "approval": "maybe"}]},
            "models.churn.hops[0].approval: 'maybe'; expected required or none",
        ),
    ],
)  # fmt: skip
def test_invalid_release_files_are_refused_in_one_line_naming_line_and_key(
    project: Path, body: dict[str, Any], where: str
) -> None:
    (project / "release.yaml").write_text(
        "# release policy\nmodels:\n  churn:\n"
        + "".join(f"    {line}\n" for line in yaml.safe_dump(body, sort_keys=False).splitlines())
    )
    result = _run("release", "plan")
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and where in lines[0], lines


def test_a_file_that_is_not_yaml_or_missing_is_refused(project: Path) -> None:
    (project / "release.yaml").write_text("models: [unclosed\n")
    result = _run("release", "plan")
    assert result.exit_code == 2 and "release.yaml:2: not valid YAML" in result.output
    result = _run("release", "plan", "-f", "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml: cannot read the release file" in result.output


def _with_nightly(project: Path, config: Config, tmp_path: Path) -> None:
    _register(config, tmp_path)
    data = project / "incoming"
    data.mkdir()
    scoring_frame(50).to_csv(data / "a.csv", index=False)
    # A yearly slot: the most recent one cannot change while the test runs.
    job = {
        "name": "nightly", "workspace": "dev", "model": "models:/churn/1",
        "input": str(data / "*.csv"), "output": "scored/{date}/", "schedule": "0 0 1 1 *",
        "options": {"workers": 1},
    }  # fmt: skip
    _policy(project, hops=[], batch=[job])


def test_a_schedule_slot_runs_once_across_controller_restarts(
    project: Path, config: Config, tmp_path: Path
) -> None:
    _with_nightly(project, config, tmp_path)
    plan = json.loads(_run("release", "plan", "--json").output)
    (job,) = plan["jobs"]
    assert job["due"] and job["slot"].endswith("-01-01T00:00:00Z")
    first = _run("release", "run", "--once")
    assert first.exit_code == 0, first.output
    assert f"batch nightly slot {job['slot']}: ok" in first.output
    year = job["slot"][:4]
    scored = pd.read_csv(project / "scored" / f"{year}-01-01" / "a.scored.csv")
    assert len(scored) == 50
    second = _run("release", "run", "--once")  # a restarted controller
    assert "nothing to do" in second.output
    runs = [e for e in read_history(config.get("dev"), "churn") if e["action"] == "release-job"]
    assert len(runs) == 1 and runs[0]["rows_scored"] == 50


def test_two_controllers_run_a_slot_once(project: Path, config: Config, tmp_path: Path) -> None:
    _with_nightly(project, config, tmp_path)
    procs = together(project, [["release", "run", "--once"], ["release", "run", "--once"]])
    assert [p.returncode for p in procs] == [0, 0], [p.stderr for p in procs]
    ran = [p for p in procs if "batch nightly slot" in p.stdout]
    assert len(ran) == 1, [p.stdout for p in procs]
    runs = [e for e in read_history(config.get("dev"), "churn") if e["action"] == "release-job"]
    assert len(runs) == 1


def test_the_controller_stops_on_sigterm(project: Path, config: Config, tmp_path: Path) -> None:
    _policy(project, hops=[HOPS[0]])
    _register(config, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "release", "run", "--poll-interval", "0.5"],
        cwd=project, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _stage_holder(config, "staging", "Staging") != ["1"]:
        time.sleep(0.5)
    assert _stage_holder(config, "staging", "Staging") == ["1"]  # the first pass promoted it
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "churn staging: dev v1 -> staging v1" in out
