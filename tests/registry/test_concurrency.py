"""Concurrent commands on one registered model, as real processes started at the same
instant (a barrier file): the model's lock (lifecycle.base.locks) makes each read-then-write
one step. Before it, four transitions at once left two versions in Production."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import cast

import pytest

from lifecycle.base.locks import lock_path, model_lock
from lifecycle.base.tags import LEASE_TAG_PREFIX, STAGE_TAG
from lifecycle.base.workspaces import Workspace, load_config
from lifecycle.registry.versions import log_and_register
from tests.support.procs import lifecycle, together


def _holders(ws: Workspace, name: str) -> tuple[list[str], str | None]:
    """Versions in Production (the registry's stage, and the toolkit's stage tag, which
    must agree), and the version ``@production`` points at."""
    client = ws.client()
    versions = client.search_model_versions(f"name='{name}'")
    in_prod = sorted(str(v.version) for v in versions if v.current_stage == "Production")
    tagged = sorted(
        str(v.version) for v in versions if (v.tags or {}).get(STAGE_TAG) == "Production"
    )
    assert tagged == in_prod, f"stage tag says {tagged}, the registry's stage {in_prod}"
    alias = client.get_registered_model(name).aliases.get("production")
    return in_prod, None if alias is None else str(alias)


def _doctor_clean(cwd: Path, name: str, ws: str) -> None:
    run = lifecycle(cwd, "doctor", name, "-w", ws, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout) == []


@pytest.fixture(params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest, project_dir: Path, dev: Workspace) -> Workspace:
    """The workspace the race runs against: the embedded SQLite ``dev`` (file lock), or a
    real ``mlflow server`` as workspace ``remote`` (the lease in the registry)."""
    if request.param == "sqlite":
        return dev
    request.getfixturevalue("config_with_remote")
    return cast(Workspace, request.getfixturevalue("remote"))


def test_concurrent_transitions_leave_one_production_version(
    backend: Workspace, project_dir: Path, model_dir: Path
) -> None:
    name = f"race-{uuid.uuid4().hex[:6]}"
    for _ in range(4):
        log_and_register(backend, model_dir, name, experiment="t", force=True, trust_pickle=True)
    for round_ in range(2):
        # Each process pauses between reading the stage holders and writing (a test-only
        # hook): without the lock all four read the same holders and all four win.
        runs = together(
            project_dir,
            [["transition", name, str(v), "Production", "-w", backend.name] for v in (1, 2, 3, 4)],
            fault="after_read_holders=pause:2",
        )
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        in_prod, alias = _holders(backend, name)
        assert len(in_prod) == 1, f"round {round_}: {in_prod} in Production"
        assert alias == in_prod[0], f"round {round_}: @production -> {alias}, stage {in_prod}"
        _doctor_clean(project_dir, name, backend.name)
    tags = backend.client().get_registered_model(name).tags
    assert not [k for k in tags if k.startswith(LEASE_TAG_PREFIX)], "a lease claim was left"


def test_concurrent_promotions_of_one_version_register_it_once(
    backend: Workspace, dev: Workspace, project_dir: Path, model_dir: Path, dummy_dir: Path
) -> None:
    """Four promotions at once into the same target, two rounds (two source versions): in
    each round one creates, three reuse, and the new copy holds Production alone."""
    target = "prod" if backend.name == "dev" else backend.name
    target_ws = backend if backend.name != "dev" else load_config().get("prod")
    name = f"twice-{uuid.uuid4().hex[:6]}"
    for src in (model_dir, dummy_dir):
        log_and_register(dev, src, name, experiment="t", force=True, trust_pickle=True)
    for round_, version in enumerate(("1", "2"), start=1):
        runs = together(
            project_dir,
            [
                ["promote", name, "--version", version, "--from", "dev", "--to", target,
                 "--stage", "Production", "--no-smoke", "--json"]
                for _ in range(4)
            ],
        )  # fmt: skip
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        results = [json.loads(r.stdout) for r in runs]
        assert sorted(r["target"]["created"] for r in results) == [False, False, False, True]
        assert {str(r["target"]["version"]) for r in results} == {str(round_)}
        assert len(target_ws.client().search_model_versions(f"name='{name}'")) == round_
        assert _holders(target_ws, name) == ([str(round_)], str(round_))
        _doctor_clean(project_dir, name, target)


def test_lock_is_per_model_and_beside_the_store(dev: Workspace) -> None:
    a, b = lock_path(dev, "a"), lock_path(dev, "b/c")
    assert a is not None and b is not None and a != b and a.parent == b.parent
    with model_lock(dev, "a"), model_lock(dev, "a"):  # re-entrant in one thread
        assert a.exists()


def _claim(ws: Workspace, name: str, expires_in: float) -> None:
    """Another runner's claim on the model's lease, as it would have written it."""
    ws.client().set_registered_model_tag(
        name,
        f"{LEASE_TAG_PREFIX}00000000000000000001dead",
        json.dumps({"owner": "ci@runner-7:4242", "purpose": "promote 42", "choosing": False,
                    "number": 1, "expires": time.time() + expires_in}),
    )  # fmt: skip


def test_remote_lease_held_elsewhere_makes_a_command_wait_then_fail(
    config_with_remote: Path, remote: Workspace, project_dir: Path, model_dir: Path
) -> None:
    name = f"held-{uuid.uuid4().hex[:6]}"
    log_and_register(remote, model_dir, name, experiment="t", trust_pickle=True)
    _claim(remote, name, expires_in=300)
    env = {"LIFECYCLE_LOCK_TIMEOUT": "2"}
    run = lifecycle(project_dir, "transition", name, "1", "Production", "-w", "remote", env=env)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"Error: Model '{name}' in workspace 'remote' is busy: ci@runner-7:4242 (promote 42) has "
        "held its lease for 2 s; try again, or raise LIFECYCLE_LOCK_TIMEOUT"
    )
    assert remote.client().get_model_version(name, "1").current_stage == "None"


def test_stale_remote_lease_is_taken_over_and_said(
    config_with_remote: Path, remote: Workspace, project_dir: Path, model_dir: Path
) -> None:
    name = f"stale-{uuid.uuid4().hex[:6]}"
    log_and_register(remote, model_dir, name, experiment="t", trust_pickle=True)
    _claim(remote, name, expires_in=-5)  # its runner died 5 s after its last renewal
    run = lifecycle(project_dir, "transition", name, "1", "Production", "-w", "remote")
    assert run.returncode == 0, run.stderr
    assert "held by ci@runner-7:4242 (promote 42) expired" in run.stderr
    assert "taking it over" in run.stderr
    assert _holders(remote, name) == (["1"], "1")
    tags = remote.client().get_registered_model(name).tags
    assert not [k for k in tags if k.startswith(LEASE_TAG_PREFIX)]


def test_concurrent_imports_of_one_artifact_register_it_once(
    dev: Workspace, project_dir: Path
) -> None:
    from tests.support.origins import build_notebook

    origin = build_notebook(project_dir / "nb", "skops")
    runs = together(
        project_dir,
        [
            ["import", "notebook", str(origin.path), "--name", "imp", "--sample",
             str(origin.sample_csv), "--target", "target", "-w", "dev", "--json"]
            for _ in range(4)
        ],
    )  # fmt: skip
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    created = sorted(json.loads(r.stdout)["created"] for r in runs)
    assert created == [False, False, False, True]
    assert [str(v.version) for v in dev.client().search_model_versions("name='imp'")] == ["1"]
    _doctor_clean(project_dir, "imp", "dev")
