"""Real AutoML models (made by AutoML's own classes, tests/fixtures/real/automl) import from
``outputs/``, the "download best model" zip and ``mlflow-model/``, and predict exactly like
AutoML's own pipeline through the pyfunc, ``score`` (local and Spark) and ``serve`` (MLflow
and Azure payloads): labels equal, probabilities within 1e-9. The model runs in a worker
inside AutoML's own environment (built once per machine by ``lifecycle env prepare``)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from lifecycle.base.env_proxy import worker_of
from lifecycle.base.envs import ENV_DIR, automl_spec, env_path, read_spec
from lifecycle.base.errors import ModelEnvError, UntrustedPickleError
from lifecycle.base.loader import load_pyfunc
from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from lifecycle.cli.background import start_background
from models.automl import build_automl_model

AUTOML = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "automl"
CASES = sorted(p.name for p in AUTOML.iterdir() if p.is_dir())
LAYOUTS = {
    "outputs": "outputs",
    "zip": "automl_best_model.zip",
    "mlflow_model": "outputs/mlflow-model",
}


def _holdout(case: str) -> pd.DataFrame:
    return pd.read_csv(AUTOML / case / "holdout.csv")


def _expected(case: str) -> pd.DataFrame:
    return pd.read_parquet(AUTOML / case / "expected.parquet")


def _assert_like_automl(case: str, labels: object, proba: pd.DataFrame | None = None) -> None:
    expected = _expected(case)
    got = np.asarray(labels)
    if expected["predict"].dtype.kind == "f":
        np.testing.assert_allclose(got.astype(float), expected["predict"], rtol=0, atol=1e-9)
    else:
        assert got.tolist() == expected["predict"].tolist()
    if proba is not None:
        want = [c for c in expected.columns if c.startswith("proba_")]
        assert [f"proba_{c}" for c in proba.columns] == want
        for col in proba.columns:
            np.testing.assert_allclose(
                proba[col].to_numpy(dtype=float), expected[f"proba_{col}"], rtol=0, atol=1e-9
            )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("case", CASES)
def test_real_automl_model_predicts_like_automl(
    automl_env: Path, tmp_path: Path, case: str, layout: str
) -> None:
    built = build_automl_model(AUTOML / case / LAYOUTS[layout], tmp_path / "m", trust_pickle=True)
    assert (built.model_dir / "data" / "model.pkl").read_bytes() == (
        AUTOML / case / "outputs" / "model.pkl"
    ).read_bytes()
    spec = read_spec(built.model_dir)
    assert spec is not None and spec.required and spec.trust_pickle
    assert env_path(spec) == automl_env
    model = load_pyfunc(str(built.model_dir))
    assert worker_of(model) is not None  # not loaded here: this environment cannot
    rows = _holdout(case)
    proba = None
    if any(c.startswith("proba_") for c in _expected(case).columns):
        proba = model.predict(rows, params={"method": "predict_proba"})
    _assert_like_automl(case, model.predict(rows), proba)
    worker_of(model).close()  # type: ignore[union-attr]


def test_real_automl_model_has_signature_example_and_pinned_environment(
    tmp_path: Path,
) -> None:
    """Built without running anything of AutoML: scoring file parsed, pickle scanned."""
    from mlflow.models import Model

    built = build_automl_model(
        AUTOML / "classification_lightgbm" / "automl_best_model.zip", tmp_path / "m",
        trust_pickle=True,
    )  # fmt: skip
    meta = Model.load(str(built.model_dir / "MLmodel"))
    assert meta.signature.inputs.input_names() == ["age", "income", "city", "plan", "visits"]
    assert [p.name for p in meta.signature.params] == ["method"]
    assert (built.model_dir / "input_example.json").is_file()
    reqs = (built.model_dir / "requirements.txt").read_text().splitlines()
    assert "azureml-automl-runtime==1.62.0.post1" in reqs and "pandas==1.5.3" in reqs
    assert all("==" in r for r in reqs)
    assert (built.model_dir / ENV_DIR / "automl.lock").is_file()
    assert built.tags["lifecycle.origin.kind"] == "automl"


def test_real_automl_import_needs_consent_and_registers_nothing(dev: Workspace) -> None:
    source = AUTOML / "classification_ensemble" / "outputs"
    result = CliRunner().invoke(cli, ["import", "automl", str(source), "--name", "nope"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--trust-pickle" in lines[0]
    assert dev.client().search_registered_models() == []


def test_environment_worker_loads_no_pickle_without_consent(
    automl_env: Path, tmp_path: Path
) -> None:
    built = build_automl_model(
        AUTOML / "regression_lightgbm" / "outputs", tmp_path / "m", trust_pickle=True
    )
    env_json = built.model_dir / ENV_DIR / "env.json"
    raw = json.loads(env_json.read_text())
    env_json.write_text(json.dumps({**raw, "trust_pickle": False}))
    with pytest.raises(UntrustedPickleError, match="no consent was recorded"):
        load_pyfunc(str(built.model_dir))
    # The worker itself refuses too, should anything start it without the flag.
    from lifecycle.base.env_proxy import EnvWorker

    conf = {"loader_module": "_automl_pyfunc", "code": "code", "data": "data/model.pkl"}
    with pytest.raises(ModelEnvError, match=r"refusing to load .*model\.pkl"):
        EnvWorker(str(built.model_dir), automl_spec(), conf, allow_pickle=False)


def _many_rows(case: str, n: int) -> pd.DataFrame:
    rows = _holdout(case)
    return pd.concat([rows] * (n // len(rows)), ignore_index=True)


def _kill_when_busy(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL ``pid`` once it is computing (its CPU time grows), i.e. mid-request."""
    import time

    def cpu() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    start, deadline = cpu(), time.monotonic() + timeout
    while cpu() - start < 20 and time.monotonic() < deadline:  # 0.2 s of CPU
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


def test_killed_environment_worker_fails_the_request_then_restarts(
    automl_env: Path, tmp_path: Path
) -> None:
    built = build_automl_model(
        AUTOML / "regression_lightgbm" / "outputs", tmp_path / "m", trust_pickle=True
    )
    model = load_pyfunc(str(built.model_dir))
    worker = worker_of(model)
    assert worker is not None and worker.pid is not None
    first = worker.pid
    # Killed while it predicts: that call fails at once with the cause.
    killer = threading.Thread(target=_kill_when_busy, args=(first,))
    killer.start()
    with pytest.raises(ModelEnvError, match=rf"pid {first}\) died with exit code -9"):
        model.predict(_many_rows("regression_lightgbm", 400_000))
    killer.join()
    rows = _holdout("regression_lightgbm")
    _assert_like_automl("regression_lightgbm", model.predict(rows))
    second = worker.pid
    assert second != first and worker.restarts == 1
    # Killed between calls: the next call gets a new worker without an error.
    os.kill(second, signal.SIGKILL)
    os.waitpid(second, 0)
    _assert_like_automl("regression_lightgbm", model.predict(rows))
    assert worker.pid not in (first, second) and worker.restarts == 2
    worker.close()


def test_local_env_manager_cannot_load_automl_and_says_so(tmp_path: Path) -> None:
    built = build_automl_model(
        AUTOML / "regression_lightgbm" / "outputs", tmp_path / "m", trust_pickle=True
    )
    with pytest.raises(ModuleNotFoundError, match="azureml"):
        load_pyfunc(str(built.model_dir), env_manager="local")


def _env_workers_under(folder: Path) -> list[int]:
    """Pids of the environment workers serving a model stored under ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [c.decode(errors="replace") for c in cmd]
        if any(c.endswith("env_worker.py") for c in text) and any(str(folder) in c for c in text):
            pids.append(int(proc.name))
    return pids


def _import_cli(name: str, case: str, layout: str = "zip") -> None:
    source = AUTOML / case / LAYOUTS[layout]
    result = CliRunner().invoke(
        cli, ["import", "automl", str(source), "--name", name, "--trust-pickle", "-w", "dev"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{name} version 1"


@pytest.mark.slow
def test_env_prepare_and_show_through_the_cli(automl_env: Path, dev: Workspace) -> None:
    _import_cli("ens", "classification_ensemble", "outputs")
    shown = CliRunner().invoke(cli, ["env", "show", "models:/ens/1", "-w", "dev", "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    assert info["prepared"] is True and info["runs_in"] == "virtualenv"
    prepared = CliRunner().invoke(cli, ["env", "prepare", "models:/ens/1", "-w", "dev", "--json"])
    assert prepared.exit_code == 0, prepared.output
    out = json.loads(prepared.stdout)
    assert out["cached"] is True and out["path"] == str(automl_env)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "spark"])
def test_real_automl_batch_scores_like_automl(
    automl_env: Path, dev: Workspace, project_dir: Path, engine: str
) -> None:
    case = "classification_ensemble"
    _import_cli("ens", case)
    out = project_dir / "scored.csv"
    result = CliRunner().invoke(
        cli,
        ["score", "models:/ens/1", str(AUTOML / case / "holdout.csv"), "--output", str(out),
         "-w", "dev", "--engine", engine],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out, keep_default_na=False)
    _assert_like_automl(case, scored["prediction"])


@pytest.mark.slow
def test_real_automl_serves_like_automl(
    automl_env: Path, dev: Workspace, project_dir: Path
) -> None:
    case = "classification_lightgbm"
    _import_cli("lgbm", case)
    rows = _holdout(case)
    split = json.loads(rows.to_json(orient="split", index=False))
    with start_background(
        "models:/lgbm/1", workspace="dev", cwd=project_dir, extra_args=["--workers", "1"]
    ) as server:
        labels = requests.post(
            server.url + "/invocations", json={"dataframe_split": split}, timeout=60
        )
        proba = requests.post(
            server.url + "/invocations",
            json={"dataframe_split": split, "params": {"method": "predict_proba"}},
            timeout=60,
        )
        azure = requests.post(server.url + "/invocations", json={"input_data": split}, timeout=60)
        # Kill the model's worker under the server while it answers a large request: that
        # request fails at once (503), the next one is answered by a new worker.
        (victim,) = _env_workers_under(project_dir)
        big = json.loads(_many_rows(case, 200_000).to_json(orient="split", index=False))
        killer = threading.Thread(target=_kill_when_busy, args=(victim,))
        killer.start()
        failed = requests.post(
            server.url + "/invocations", json={"dataframe_split": big}, timeout=120
        )
        killer.join()
        again = requests.post(
            server.url + "/invocations", json={"dataframe_split": split}, timeout=60
        )
    assert failed.status_code == 503, failed.text
    assert "died with exit code -9" in failed.json()["message"]
    assert again.status_code == 200, again.text
    _assert_like_automl(case, again.json()["predictions"])
    for answer in (labels, proba, azure):
        assert answer.status_code == 200, answer.text
    _assert_like_automl(
        case, labels.json()["predictions"], pd.DataFrame(proba.json()["predictions"])
    )
    _assert_like_automl(case, azure.json())


def test_concurrent_calls_are_predicted_together_and_each_gets_its_own_rows(
    automl_env: Path, tmp_path: Path
) -> None:
    """What the server's threads do at 16 connections: each caller gets exactly its rows'
    predictions, from fewer calls to the worker than callers."""
    case = "classification_lightgbm"
    built = build_automl_model(AUTOML / case / "outputs", tmp_path / "m", trust_pickle=True)
    model = load_pyfunc(str(built.model_dir))
    impl = model._model_impl
    rows = _holdout(case)
    expected = _expected(case)["predict"].tolist()
    callers = 32
    start = threading.Barrier(callers)
    answers: dict[int, list[str]] = {}

    def call(i: int) -> None:
        mine = rows.iloc[[i, i + 40]].reset_index(drop=True)
        start.wait()
        answers[i] = list(model.predict(mine))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {i: [expected[i], expected[i + 40]] for i in range(callers)}
    assert impl.coalescer.calls < callers
    worker_of(model).close()  # type: ignore[union-attr]


@pytest.mark.slow
def test_real_automl_baseline_and_monitor_run_in_its_environment(
    automl_env: Path, dev: Workspace, project_dir: Path
) -> None:
    """The import's baseline (from --sample) and ``monitor`` predict through the model's
    environment: the same rows monitored against their own baseline show no drift."""
    case = "classification_ensemble"
    holdout = AUTOML / case / "holdout.csv"
    source = AUTOML / case / "outputs"
    imported = CliRunner().invoke(
        cli,
        ["import", "automl", str(source), "--name", "mon", "--trust-pickle", "--sample",
         str(holdout), "-w", "dev"],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    result = CliRunner().invoke(
        cli, ["monitor", "models:/mon/1", "--input", str(holdout), "-w", "dev", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["drift"] is False
    assert report["rows"] == len(_holdout(case))
    # the scores too (issue #21): AutoML's predict_proba, in its environment, against itself
    assert report["score"]["psi"] == 0.0 and report["score"]["ks_statistic"] == 0.0
