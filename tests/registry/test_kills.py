"""Promotions killed, stopped or failing at each step of their write phase, as real
``lifecycle`` processes with a fault injected at the named step ($LIFECYCLE_TEST_FAULT):
afterwards ``doctor`` names the damage and its repair, other commands refuse to build on it,
and a rerun or ``lifecycle repair`` leaves a registry that ``doctor`` finds clean."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from lifecycle.base.audit import read_history
from lifecycle.base.errors import PromotionError
from lifecycle.base.refs import resolve_model, search_versions
from lifecycle.base.tags import JOURNAL_TAG_PREFIX
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.doctor import check
from lifecycle.registry.promote import promote
from lifecycle.registry.versions import log_and_register
from tests.support.procs import lifecycle

#: The steps of a promotion's write phase, in order (lifecycle/registry/promote.py).
STEPS = ["after_journal", "after_run", "after_register", "after_verify", "after_stage",
         "after_audit"]  # fmt: skip


@pytest.fixture
def champion(dev: Workspace, prod: Workspace, model_dir: Path, dummy_dir: Path) -> str:
    """A model with v1 promoted to Production in prod (the champion) and a v2 in dev."""
    name = f"k-{uuid.uuid4().hex[:6]}"
    log_and_register(dev, model_dir, name, experiment="t", trust_pickle=True)
    log_and_register(dev, dummy_dir, name, experiment="t", trust_pickle=True)
    promote(dev, prod, name, version="1", smoke=False)
    return name


def _promote_v2(cwd: Path, name: str, fault: str | None = None) -> object:
    return lifecycle(
        cwd, "promote", name, "--version", "2", "--from", "dev", "--to", "prod", "--no-smoke",
        fault=fault,
    )  # fmt: skip


def _champion_is(prod: Workspace, name: str, version: str) -> None:
    assert resolve_model(prod, f"models:/{name}/Production").version == version
    assert resolve_model(prod, f"models:/{name}@production").version == version


def _run_dirs(prod: Workspace, name: str) -> list[Path]:
    """Artifact folders of the target's promotion runs that still exist on disk."""
    client = prod.client()
    exp = client.get_experiment_by_name(f"promoted/{name}")
    runs = client.search_runs([exp.experiment_id], run_view_type=3)  # ALL, deleted included
    paths = [Path(urlparse(r.info.artifact_uri).path) for r in runs]
    return [p for p in paths if p.exists() and any(p.iterdir())]


@pytest.mark.parametrize("step", STEPS)
def test_kill_at_each_step_then_rerun_or_repair(
    step: str, project_dir: Path, prod: Workspace, champion: str
) -> None:
    name = champion
    killed = _promote_v2(project_dir, name, fault=f"{step}=kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # type: ignore[attr-defined]
    # doctor sees the unfinished promotion and names the repair.
    doc = lifecycle(project_dir, "doctor", name, "-w", "prod")
    assert doc.returncode == 1
    assert "unfinished-promotion" in doc.stdout
    assert f"repair: lifecycle repair {name} -w prod" in doc.stdout
    # Another command on the model stops with one line naming the exact repair command.
    moved = lifecycle(project_dir, "transition", name, "1", "Staging", "-w", "prod")
    assert moved.returncode == 1
    assert (
        moved.stderr.strip().splitlines() == [moved.stderr.strip().splitlines()[0]]
        and f"run: lifecycle repair {name} -w prod" in moved.stderr
    )
    if STEPS.index(step) % 2 == 0:
        fixed = lifecycle(project_dir, "repair", name, "-w", "prod")
        assert fixed.returncode == 0, fixed.stderr
        verified = STEPS.index(step) >= STEPS.index("after_verify")
        assert ("finished" if verified else "undone") in fixed.stdout
        again = _promote_v2(project_dir, name)
    else:
        again = _promote_v2(project_dir, name)  # the rerun repairs first
        assert "the unfinished promotion" in again.stdout  # type: ignore[attr-defined]
    assert again.returncode == 0, again.stderr  # type: ignore[attr-defined]
    doc = lifecycle(project_dir, "doctor", name, "-w", "prod", "--json")
    assert doc.returncode == 0 and json.loads(doc.stdout) == [], doc.stdout
    versions = sorted(str(v.version) for v in search_versions(prod, name))
    _champion_is(prod, name, versions[-1])
    assert len(versions) == 2, f"{versions}: a half-done copy was left or duplicated"
    assert len(_run_dirs(prod, name)) == 2, "a discarded run's artifacts are still on disk"


@pytest.mark.parametrize("step", ["after_run", "after_stage"])
def test_kill_on_a_server_then_rerun(
    step: str, config_with_remote: Path, project_dir: Path, dev: Workspace, remote: Workspace,
    model_dir: Path, dummy_dir: Path,
) -> None:  # fmt: skip
    """The same against a real ``mlflow server`` (the lease instead of the file lock)."""
    name = f"ks-{uuid.uuid4().hex[:6]}"
    log_and_register(dev, model_dir, name, experiment="t", trust_pickle=True)
    log_and_register(dev, dummy_dir, name, experiment="t", trust_pickle=True)
    promote(dev, remote, name, version="1", smoke=False)
    args = ("promote", name, "--version", "2", "--from", "dev", "--to", "remote", "--no-smoke")
    short = {"LIFECYCLE_LEASE_TTL": "3"}  # the killed command's claim expires 3 s after it dies
    killed = lifecycle(project_dir, *args, fault=f"{step}=kill", env=short)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    doc = lifecycle(project_dir, "doctor", name, "-w", "remote")
    assert doc.returncode == 1 and f"repair: lifecycle repair {name} -w remote" in doc.stdout
    again = lifecycle(project_dir, *args, env=short)
    assert again.returncode == 0, again.stderr
    assert "taking it over" in again.stderr and "the unfinished promotion" in again.stdout
    doc = lifecycle(project_dir, "doctor", name, "-w", "remote", "--json")
    assert doc.returncode == 0 and json.loads(doc.stdout) == [], doc.stdout
    versions = sorted(str(v.version) for v in search_versions(remote, name))
    assert len(versions) == 2
    _champion_is(remote, name, versions[-1])
    client = remote.client()
    exp = client.get_experiment_by_name(f"promoted/{name}")
    runs = client.search_runs([exp.experiment_id], run_view_type=3)
    with_files = [r for r in runs if client.list_artifacts(r.info.run_id)]
    assert len(with_files) == 2, "a discarded run's artifacts are still on the server"


def test_sigterm_runs_the_rollback_before_exit(
    project_dir: Path, prod: Workspace, champion: str
) -> None:
    stopped = _promote_v2(project_dir, champion, fault="after_stage=term")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr  # type: ignore[attr-defined]
    err = stopped.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert err[-1].startswith(f"Error: Promotion of {champion} v2 into 'prod' was interrupted")
    assert "and was rolled back" in err[-1]
    _champion_is(prod, champion, "1")
    assert [str(v.version) for v in search_versions(prod, champion)] == ["1"]
    assert check(prod, champion) == []
    assert len(_run_dirs(prod, champion)) == 1


def test_failure_after_the_stage_move_restores_the_champion(
    project_dir: Path, prod: Workspace, champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFECYCLE_TEST_FAULT", "after_stage=fail")
    with pytest.raises(PromotionError, match="failed and was rolled back: InjectedFault"):
        promote(load("dev"), prod, champion, version="2", smoke=False)
    _champion_is(prod, champion, "1")
    assert [str(v.version) for v in search_versions(prod, champion)] == ["1"]
    assert check(prod, champion) == []
    undone = [e for e in read_history(prod, champion) if e["action"] == "promote_undone"]
    assert undone and undone[-1]["clean"] is True
    assert any("back in Production" in r for r in undone[-1]["restored"])


def test_an_undo_that_fails_says_so_and_repair_finishes_it(
    project_dir: Path, prod: Workspace, champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFECYCLE_TEST_FAULT", "after_stage=fail,undo_discard=fail")
    with pytest.raises(PromotionError) as info:
        promote(load("dev"), prod, champion, version="2", smoke=False)
    message = str(info.value)
    assert "rolled back" not in message.replace("the rollback left behind", "")
    assert f"the rollback left behind: {champion} version 2" in message
    assert message.endswith(f"run: lifecycle repair {champion} -w prod")
    # The audit history records what was left; the journal stays for repair; doctor sees it.
    undone = [e for e in read_history(prod, champion) if e["action"] == "promote_undone"]
    assert undone[-1]["left_behind"] and undone[-1]["clean"] is False
    assert any(
        k.startswith(JOURNAL_TAG_PREFIX) for k in prod.client().get_registered_model(champion).tags
    )
    assert [v.check for v in check(prod, champion)] == ["unfinished-promotion"]
    monkeypatch.delenv("LIFECYCLE_TEST_FAULT")
    fixed = lifecycle(project_dir, "repair", champion, "-w", "prod")
    assert fixed.returncode == 0 and f"removed {champion} version 2" in fixed.stdout
    assert [str(v.version) for v in search_versions(prod, champion)] == ["1"]
    _champion_is(prod, champion, "1")
    assert check(prod, champion) == []


def test_doctor_names_each_violation_and_its_repair(
    project_dir: Path, prod: Workspace, champion: str, model_dir: Path
) -> None:
    """Damage made with MLflow's own client (as a script or another tool would) is found."""
    client = prod.client()
    extra = log_and_register(
        prod, model_dir, champion, experiment="x", force=True, trust_pickle=True
    ).version
    client.transition_model_version_stage(champion, extra, "Production")  # no archive, no audit
    log_and_register(
        prod, model_dir, champion, experiment="x", force=True, trust_pickle=True
    )  # same content again
    run = client.create_run(client.get_experiment_by_name(f"promoted/{champion}").experiment_id)
    found = {v.check: v for v in check(prod, champion)}
    assert set(found) == {"two-holders", "alias-split", "unaudited-stage", "duplicate-digest",
                          "running-run"}  # fmt: skip
    assert found["running-run"].repair == f"lifecycle repair {champion} -w prod"
    doc = lifecycle(project_dir, "doctor", "-w", "prod")
    assert doc.returncode == 1 and doc.stdout.count("repair: ") == 5
    for v in found.values():  # each named repair, run as printed, clears the registry
        if v.check in ("two-holders", "running-run"):
            assert lifecycle(project_dir, *v.repair.split()[1:]).returncode == 0
    assert run.info.run_id not in {r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name(f"promoted/{champion}").experiment_id])}  # fmt: skip
    left = {v.check for v in check(prod, champion)}
    assert left == {"duplicate-digest"}
    fix = next(v for v in check(prod, champion)).repair
    assert lifecycle(project_dir, *fix.split()[1:]).returncode == 0
    assert check(prod, champion) == []


def load(name: str) -> Workspace:
    from lifecycle.base.workspaces import load_config

    return load_config().get(name)
