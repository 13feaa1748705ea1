"""Concurrent commands on one registered model, as real processes started at the same
instant (a barrier file): the model's lock (lifecycle.base.locks) makes each read-then-write
one step. Before it, four transitions at once left two versions in Production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lifecycle.base.locks import lock_path, model_lock
from lifecycle.base.tags import STAGE_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.versions import log_and_register
from tests.support.mlflow_models import save_sklearn_model

#: A CLI run that waits at a barrier (a file appearing) before it starts, so that all
#: processes hit the registry together.
_AT_BARRIER = r"""
import os, sys, time
import mlflow, mlflow.tracking  # imported before the barrier: the processes start together
from lifecycle.cli import main
from lifecycle.registry import promote, stages
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.002)
sys.argv = ["lifecycle", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, fitted_logreg: Any, breast_cancer: Any
) -> Path:
    X, _ = breast_cancer
    return save_sklearn_model(fitted_logreg, tmp_path_factory.mktemp("m") / "model", X.head(3))


def _together(
    cwd: Path, commands: list[list[str]], pause: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    go = cwd / f"go-{time.monotonic_ns()}"
    env = {**os.environ, **({"LIFECYCLE_TEST_FAULT": pause} if pause else {})}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_BARRIER, str(go), *cmd],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    time.sleep(8.0)  # every process has imported and is waiting at the barrier
    go.write_text("go")
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


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


def test_concurrent_transitions_leave_one_production_version(
    dev: Workspace, project_dir: Path, model_dir: Path
) -> None:
    for _ in range(4):
        log_and_register(dev, model_dir, "race", experiment="t", force=True)
    for round_ in range(2):
        # Each process pauses between reading the stage holders and writing (a test-only
        # hook): without the lock all four read the same holders and all four win.
        runs = _together(
            project_dir,
            [["transition", "race", str(v), "Production", "-w", "dev"] for v in (1, 2, 3, 4)],
            pause="after_read_holders=pause:2",
        )
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        in_prod, alias = _holders(dev, "race")
        assert len(in_prod) == 1, f"round {round_}: {in_prod} in Production"
        assert alias == in_prod[0], f"round {round_}: @production -> {alias}, stage {in_prod}"


def test_concurrent_promotions_of_one_version_register_it_once(
    dev: Workspace, prod: Workspace, project_dir: Path, model_dir: Path
) -> None:
    log_and_register(dev, model_dir, "twice", experiment="t", force=True)
    runs = _together(
        project_dir,
        [
            ["promote", "twice", "--version", "1", "--from", "dev", "--to", "prod",
             "--stage", "Production", "--no-smoke", "--json"]
            for _ in range(3)
        ],
    )  # fmt: skip
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    results = [json.loads(r.stdout) for r in runs]
    assert sorted(r["target"]["created"] for r in results) == [False, False, True]
    assert {str(r["target"]["version"]) for r in results} == {"1"}
    assert len(prod.client().search_model_versions("name='twice'")) == 1
    assert _holders(prod, "twice") == (["1"], "1")


def test_lock_is_per_model_and_beside_the_store(dev: Workspace) -> None:
    a, b = lock_path(dev, "a"), lock_path(dev, "b/c")
    assert a is not None and b is not None and a != b and a.parent == b.parent
    with model_lock(dev, "a"), model_lock(dev, "a"):  # re-entrant in one thread
        assert a.exists()
