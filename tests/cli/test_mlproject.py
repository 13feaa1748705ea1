"""Every MLproject entry point, run for real with ``mlflow run`` (``--env-manager local``).

The chain runs from another directory (``mlflow run /path/to/repo``), one entry runs from the
repo root, and each step is checked through the library, not by reading what it printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

from lifecycle.base.refs import resolve_model
from lifecycle.base.workspaces import load_config, quiet_mlflow_warnings
from tests.support.mlflow_server import free_port, premigrate_sqlite

REPO = Path(__file__).resolve().parents[2]


def _env(work: Path, launcher_db: str = "launcher.db") -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["LIFECYCLE_CONFIG"] = str(work / "lifecycle.yaml")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / launcher_db}"  # mlflow run's own runs
    return env


def mlflow_run(
    work: Path, entry: str, cwd: Path | None = None, launcher_db: str = "launcher.db", **params: str
) -> None:
    cmd = ["mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(
        cmd,
        cwd=cwd or work,
        env=_env(work, launcher_db),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"mlflow run -e {entry} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlproject")
    (path / "lifecycle.yaml").write_text(yaml.safe_dump({"home": str(path / ".lifecycle")}))
    # The launcher's own store, migrated here once (in this warm process) instead of by
    # the first `mlflow run`; runs made side by side each get a copy (no lock contention).
    premigrate_sqlite(path / "launcher.db")
    for name in ("launcher-a.db", "launcher-b.db"):
        shutil.copy(path / "launcher.db", path / name)
    return path


def test_entry_points_chain(work: Path) -> None:
    config = load_config(work / "lifecycle.yaml")
    dev, prod = config.get("dev"), config.get("prod")
    mlflow_run(work, "train", out_dir=str(work / "nb"), workspace="dev")
    assert (work / "nb" / "model.joblib").is_file()
    exp = dev.client().get_experiment_by_name("notebook-training")
    assert exp is not None and dev.client().search_runs([exp.experiment_id])

    mlflow_run(
        work,
        "import",
        path=str(work / "nb" / "model.joblib"),
        name="mlp",
        sample=str(work / "nb" / "sample.csv"),
        target="target",
        trust_pickle="true",
        workspace="dev",
    )
    assert resolve_model(dev, "models:/mlp/1").version == "1"

    # From the repo root this time.
    mlflow_run(
        work, "transition", cwd=REPO, name="mlp", version="1", stage="staging", workspace="dev"
    )
    assert resolve_model(dev, "models:/mlp/Staging").version == "1"

    mlflow_run(work, "promote", name="mlp", version="1", gate="sample_accuracy>=0.9")
    assert resolve_model(prod, "models:/mlp/Production").version == "1"
    mlflow_run(work, "promote", name="mlp", version="1", gate="sample_accuracy>=0.9")  # idempotent
    with quiet_mlflow_warnings():
        assert len(prod.client().search_model_versions("name='mlp'")) == 1

    # Then two pairs side by side, each a writer of prod's store beside a reader of it (the
    # Azure specs only read the registry), each `mlflow run` with its own launcher store.
    holdout = str(work / "nb" / "holdout.csv")
    pairs = [
        [
            ("score_batch", {"model_uri": "models:/mlp/Production", "input": holdout,
                             "output": str(work / "scored.csv"), "workers": "1"}),
            ("deploy_azure", {"target": "batch", "name": "mlp", "version": "1",
                              "endpoint": "mlp-batch", "out": str(work / "azure-batch")}),
        ],
        [
            ("monitor", {"model_uri": "models:/mlp/Production", "input": holdout,
                         "labels": "target"}),
            ("deploy_azure", {"target": "online", "name": "mlp", "version": "1",
                              "endpoint": "mlp-rt", "out": str(work / "azure-online")}),
        ],
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        for pair in pairs:
            runs = [
                pool.submit(mlflow_run, work, entry, launcher_db=db, workspace="prod", **params)
                for db, (entry, params) in zip(
                    ("launcher-a.db", "launcher-b.db"), pair, strict=True
                )
            ]
            for run in runs:
                run.result()
    lines = (work / "scored.csv").read_text().splitlines()
    assert lines[0] == "prediction" and len(lines) == len(Path(holdout).read_text().splitlines())
    assert (work / "azure-batch" / "deployment.yml").is_file()
    assert any((work / "azure-online").rglob("*.yml"))

    # rollback needs a previous Production holder: promote a second (forced) version first.
    from lifecycle.registry.promote import promote

    second = promote(dev, prod, "mlp", version="1", force=True, smoke=False)
    assert second.version == "2"
    mlflow_run(work, "rollback", name="mlp", stage="Production", workspace="prod")
    assert resolve_model(prod, "models:/mlp/Production").version == "1"


def test_serve_entry_point(work: Path) -> None:
    """``mlflow run -e serve`` starts the scoring server; it answers until stopped."""
    config = load_config(work / "lifecycle.yaml")
    if not config.get("prod").client().search_registered_models(filter_string="name='mlp'"):
        pytest.fail("test_entry_points_chain must run first (it registers mlp)")
    port = free_port()
    cmd = ["mlflow", "run", str(REPO), "-e", "serve", "--env-manager", "local"]
    cmd += ["-P", "model_uri=models:/mlp/1", "-P", f"port={port}", "-P", "workspace=prod"]
    proc = subprocess.Popen(
        cmd,
        cwd=work,
        env=_env(work),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        version = requests.get(f"http://127.0.0.1:{port}/version", timeout=5).json()
        assert version["name"] == "mlp" and str(version["version"]) == "1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
