"""Gated, idempotent, atomic promotion between real SQLite stores and real mlflow servers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lifecycle.base.audit import read_history
from lifecycle.base.errors import GateFailedError, InvalidArgumentError, PromotionError
from lifecycle.base.refs import resolve_model, search_versions
from lifecycle.base.tags import DIGEST_TAG, SOURCE_VERSION_TAG, SOURCE_WORKSPACE_TAG
from lifecycle.base.workspaces import Workspace, load_config, use_workspace
from lifecycle.cli import cli
from lifecycle.registry.lineage import lineage
from lifecycle.registry.promote import promote
from lifecycle.registry.stages import versions_in_stage
from lifecycle.registry.versions import log_and_register


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def holdout_csv(tmp_path_factory: pytest.TempPathFactory, breast_cancer: Any) -> Path:
    X, y = breast_cancer
    path = tmp_path_factory.mktemp("h") / "holdout.csv"
    X.assign(target=y).sample(200, random_state=0).to_csv(path, index=False)
    return path


def _register(ws: Workspace, model_dir: Path, name: str, **metrics: float) -> str:
    from mlflow.entities import Metric

    # Two steps of each metric: the copy must keep the whole history.
    history = [Metric(k, v - 0.01, 1000, 0) for k, v in metrics.items()]
    history += [Metric(k, v, 2000, 1) for k, v in metrics.items()]
    reg = log_and_register(
        ws,
        model_dir,
        name,
        experiment="train",
        params={"C": "1.0"},
        metrics=history,
        run_tags={"team": "fraud"},
        force=True,
        trust_pickle=True,
    )
    return reg.version


def test_promote_deep_copies_and_stages(
    dev: Workspace, prod: Workspace, model_dir: Path, breast_cancer: Any, fitted_logreg: Any
) -> None:
    v = _register(dev, model_dir, "churn", accuracy=0.97)
    dev.client().set_model_version_tag("churn", v, "validated_by", "risk-team")
    calls: list[tuple[str, int, int]] = []
    res = promote(
        dev, prod, "churn", version=v, gates=["accuracy>=0.9"], progress=lambda *a: calls.append(a)
    )
    # Byte progress for the download and the upload (the CLI draws bars from these).
    for phase in ("download", "upload"):
        seen = [c for c in calls if c[0] == phase]
        assert seen and seen[-1][1] == seen[-1][2] > 0
    assert res.created and res.version == "1" and res.stage == "Production"
    assert [g.passed for g in res.gates] == [True, True]  # threshold + smoke test
    client = prod.client()
    mv = client.get_model_version("churn", "1")
    # The version's source is the target run's artifacts, never the dev store.
    assert mv.source.startswith(prod.artifact_location) and "/dev/" not in mv.source
    assert mv.tags[SOURCE_WORKSPACE_TAG] == "dev" and mv.tags[SOURCE_VERSION_TAG] == v
    assert mv.tags["validated_by"] == "risk-team"  # user tags travel, ours are rewritten
    run = client.get_run(mv.run_id)
    assert run.data.params == {"C": "1.0"}
    assert run.data.tags["team"] == "fraud"
    assert [m.value for m in client.get_metric_history(mv.run_id, "accuracy")] == pytest.approx(
        [0.96, 0.97]
    )
    assert client.get_experiment(run.info.experiment_id).name == "promoted/churn"
    X, _ = breast_cancer
    with use_workspace(prod):
        a = mlflow.pyfunc.load_model("models:/churn/Production").predict(X.head(10))
        b = mlflow.pyfunc.load_model("models:/churn@production").predict(X.head(10))
        info = mlflow.models.get_model_info("models:/churn/1")
    np.testing.assert_array_equal(a, fitted_logreg.predict(X.head(10)))
    np.testing.assert_array_equal(a, b)
    assert info.signature is not None and info.saved_input_example_info is not None
    events = read_history(prod, "churn")
    assert events[-1]["action"] == "promote" and events[-1]["to_stage"] == "Production"
    assert [e["action"] for e in read_history(dev, "churn")] == ["gate"]


def test_failing_gate_leaves_target_untouched_and_shows_table(
    project_dir: Path, dev: Workspace, prod: Workspace, model_dir: Path
) -> None:
    v = _register(dev, model_dir, "fraud", accuracy=0.8)
    result = CliRunner().invoke(
        cli,
        [
            *("promote", "fraud", "--version", v, "--from", "dev", "--to", "prod"),
            *("--gate", "accuracy>=0.9", "--gate", "auc>0.5"),
        ],
    )
    assert result.exit_code == 1
    assert "accuracy>=0.9" in result.stdout and "FAIL" in result.stdout
    assert "metric 'auc' not in the source run; it has: accuracy" in result.stdout
    assert "skipped" in result.stdout  # the smoke test is not run after a failure
    assert "refused: gate(s) failed: accuracy>=0.9, auc>0.5" in result.stderr
    assert prod.client().search_registered_models() == []
    as_json = CliRunner().invoke(
        cli,
        [
            "promote",
            "fraud",
            "--version",
            v,
            "--from",
            "dev",
            "--to",
            "prod",
            "--json",
            "--gate",
            "accuracy>=0.9",
        ],
    )
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["passed"] is False and data["gates"][0]["value"] == 0.8
    assert data["target"]["version"] is None
    gate_event = read_history(dev, "fraud")[-1]
    assert gate_event["action"] == "gate" and gate_event["passed"] is False


def test_dry_run_writes_nothing(
    project_dir: Path, dev: Workspace, prod: Workspace, model_dir: Path
) -> None:
    v = _register(dev, model_dir, "dry", accuracy=0.95)
    result = CliRunner().invoke(
        cli,
        [
            *("promote", "dry", "--version", v, "--from", "dev", "--to", "prod"),
            *("--dry-run", "--json", "--no-smoke"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dry_run"] and data["passed"] and data["target"]["version"] is None
    assert any("register a new version" in step for step in data["plan"])
    assert prod.client().search_registered_models() == []
    assert read_history(dev, "dry") == []


def test_holdout_refuses_worse_accepts_better(
    dev: Workspace, prod: Workspace, model_dir: Path, dummy_dir: Path, holdout_csv: Path
) -> None:
    good = _register(dev, model_dir, "bc")
    bad = _register(dev, dummy_dir, "bc")
    # No champion yet: the gate passes and says so.
    first = promote(dev, prod, "bc", version=bad, holdout=holdout_csv, target="target", smoke=False)
    assert first.gates[0].passed and "no champion" in first.gates[0].detail
    better = promote(
        dev, prod, "bc", version=good, holdout=holdout_csv, target="target", smoke=False
    )
    assert better.version == "2" and better.archived == ["1"]
    assert better.holdout is not None
    assert better.holdout["candidate"]["accuracy"] > better.holdout["champion"]["accuracy"]
    with pytest.raises(GateFailedError, match="holdout accuracy") as err:
        promote(dev, prod, "bc", version=bad, holdout=holdout_csv, target="target", force=True)
    row = err.value.results[0]
    assert row["passed"] is False and row["value"] < 0.7 and row["threshold"].startswith(">=")
    assert len(search_versions(prod, "bc")) == 2
    assert versions_in_stage(prod, "bc", "Production") == ["2"]
    # A big enough tolerance lets it through (dry run: nothing written).
    lenient = promote(
        dev,
        prod,
        "bc",
        version=bad,
        holdout=holdout_csv,
        target="target",
        min_delta=0.9,
        dry_run=True,
        smoke=False,
    )
    assert lenient.passed and len(search_versions(prod, "bc")) == 2


def test_holdout_bad_input(
    dev: Workspace, prod: Workspace, model_dir: Path, holdout_csv: Path
) -> None:
    v = _register(dev, model_dir, "bad-in")
    with pytest.raises(InvalidArgumentError, match="Target column 'label' is not in holdout"):
        promote(dev, prod, "bad-in", version=v, holdout=holdout_csv, target="label")
    with pytest.raises(InvalidArgumentError, match="'rmse' is not a classification metric"):
        promote(dev, prod, "bad-in", version=v, holdout=holdout_csv, target="target", metric="rmse")
    with pytest.raises(InvalidArgumentError, match=r"Invalid gate 'accuracy=>0\.9'"):
        promote(dev, prod, "bad-in", version=v, gates=["accuracy=>0.9"])


def test_crash_between_upload_and_registration_then_rerun(
    dev: Workspace, prod: Workspace, model_dir: Path
) -> None:
    v = _register(dev, model_dir, "atomic")

    def crash(run_id: str) -> None:
        raise ConnectionError("network dropped (injected)")

    with pytest.raises(PromotionError, match="rolled back: ConnectionError"):
        promote(dev, prod, "atomic", version=v, before_register=crash, smoke=False)
    client = prod.client()
    assert client.search_registered_models(filter_string="name='atomic'") == []
    exp = client.get_experiment_by_name("promoted/atomic")
    assert client.search_runs([exp.experiment_id]) == []
    again = promote(dev, prod, "atomic", version=v, smoke=False)
    assert again.created and again.version == "1"
    assert versions_in_stage(prod, "atomic", "Production") == ["1"]


def test_crash_at_stage_move_restores_champion(
    dev: Workspace, prod: Workspace, model_dir: Path, dummy_dir: Path
) -> None:
    first = _register(dev, model_dir, "restore")
    second = _register(dev, dummy_dir, "restore")
    promote(dev, prod, "restore", version=first, smoke=False)

    def crash(version: str) -> None:
        raise RuntimeError("registry went away (injected)")

    with pytest.raises(PromotionError, match="rolled back: RuntimeError: registry went away"):
        promote(dev, prod, "restore", version=second, before_stage=crash, smoke=False)
    assert [str(v.version) for v in search_versions(prod, "restore")] == ["1"]
    assert resolve_model(prod, "models:/restore@production").version == "1"
    assert resolve_model(prod, "models:/restore/Production").version == "1"


def test_double_promotion_makes_one_version(
    dev: Workspace, prod: Workspace, model_dir: Path
) -> None:
    v = _register(dev, model_dir, "twice")
    a = promote(dev, prod, "twice", version=v, target_stage="Staging", smoke=False)
    b = promote(dev, prod, "twice", version=v, target_stage="production", smoke=False)
    assert a.created and not b.created and a.version == b.version == "1"
    assert len(search_versions(prod, "twice")) == 1
    assert versions_in_stage(prod, "twice", "Production") == ["1"]
    forced = promote(dev, prod, "twice", version=v, force=True, smoke=False)
    assert forced.created and forced.version == "2"


def test_promote_logged_model_source(
    dev: Workspace, prod: Workspace, fitted_logreg: Any, breast_cancer: Any
) -> None:
    X, _ = breast_cancer
    with use_workspace(dev):
        mlflow.set_experiment("nb")
        with mlflow.start_run():
            mlflow.log_metric("accuracy", 0.98)
            info = mlflow.sklearn.log_model(
                fitted_logreg,
                name="model",
                input_example=X.head(2),
                pip_requirements=["scikit-learn"],
            )
        mv = mlflow.register_model(info.model_uri, "logged")
    assert mv.source.startswith("models:/m-")
    res = promote(dev, prod, "logged", version=mv.version, gates=["accuracy>0.9"], smoke=False)
    assert res.passed and res.version == "1"
    target = prod.client().get_model_version("logged", "1")
    assert not target.source.startswith("models:/")
    with use_workspace(prod):
        pred = mlflow.pyfunc.load_model("models:/logged/Production").predict(X.head(5))
    np.testing.assert_array_equal(pred, fitted_logreg.predict(X.head(5)))


def test_select_source_by_stage_or_alias(dev: Workspace, prod: Workspace, model_dir: Path) -> None:
    from lifecycle.registry.stages import transition

    v = _register(dev, model_dir, "sel")
    transition(dev, "sel", v, "Staging", alias="champion")
    by_stage = promote(dev, prod, "sel", stage="staging", dry_run=True, smoke=False)
    by_alias = promote(dev, prod, "sel", alias="champion", dry_run=True, smoke=False)
    assert by_stage.source["version"] == by_alias.source["version"] == v
    with pytest.raises(InvalidArgumentError, match="exactly one of --version, --stage or --alias"):
        promote(dev, prod, "sel", version=v, alias="champion")
    with pytest.raises(InvalidArgumentError, match="same workspace"):
        promote(dev, dev, "sel", version=v)


def test_local_remote_local_three_hops(
    config_with_remote: Path, model_dir: Path, breast_cancer: Any, fitted_logreg: Any
) -> None:
    config = load_config()
    dev, remote, prod = (config.get(n) for n in ("dev", "remote", "prod"))
    name = _uniq("hop")
    v = _register(dev, model_dir, name, accuracy=0.97)
    mid = promote(
        dev, remote, name, version=v, target_stage="Staging", gates=["accuracy>=0.9"], smoke=False
    )
    assert mid.created
    last = promote(remote, prod, name, stage="Staging", smoke=False)
    assert last.created and last.version == "1"
    # The digest stays the same across both copies.
    assert last.digest == mid.digest
    chain = lineage(config, prod, name, last.version)
    assert [(h["workspace"], h["version"]) for h in chain] == [
        ("prod", "1"),
        ("remote", mid.version),
        ("dev", v),
    ]
    assert chain[0]["stage"] == "Production" and chain[1]["stage"] == "Staging"
    assert len({h["digest"] for h in chain}) == 1
    X, _ = breast_cancer
    with use_workspace(prod):
        pred = mlflow.pyfunc.load_model(f"models:/{name}/Production").predict(X.head(5))
    np.testing.assert_array_equal(pred, fitted_logreg.predict(X.head(5)))
    result = CliRunner().invoke(cli, ["lineage", name, "1", "-w", "prod"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"prod {name} version 1 [Production] promoted")
    assert f"<- remote {name} version {mid.version} [Staging]" in lines[1]
    assert f"<- dev {name} version {v} [None]" in lines[2]


def test_remote_to_remote(
    remote: Workspace, remote2: Workspace, model_dir: Path, breast_cancer: Any
) -> None:
    name = _uniq("r2r")
    v = _register(remote, model_dir, name, accuracy=0.97)
    res = promote(remote, remote2, name, version=v, smoke=False)
    assert res.created and res.stage == "Production"
    mv = remote2.client().get_model_version(name, res.version)
    assert mv.tags[DIGEST_TAG] == res.digest
    assert mv.source.startswith("mlflow-artifacts:") and "mlflow-artifacts" in mv.source
    X, _ = breast_cancer
    with use_workspace(remote2):
        pred = mlflow.pyfunc.load_model(f"models:/{name}@production").predict(X.head(3))
    assert len(pred) == 3
    frame = pd.DataFrame(read_history(remote2, name))
    assert frame["action"].tolist() == ["promote"]


def test_backend_without_deletes_tags_failed_and_archives(
    dev: Workspace, prod: Workspace, model_dir: Path, dummy_dir: Path
) -> None:
    import dataclasses

    no_delete = dataclasses.replace(prod, supports_delete=False)  # like Azure ML
    first = _register(dev, model_dir, "nodel")
    second = _register(dev, dummy_dir, "nodel")
    promote(dev, no_delete, "nodel", version=first, smoke=False)

    def crash(version: str) -> None:
        raise RuntimeError("injected")

    with pytest.raises(PromotionError, match="rolled back"):
        promote(dev, no_delete, "nodel", version=second, before_stage=crash, smoke=False)
    failed = prod.client().get_model_version("nodel", "2")
    assert failed.tags["lifecycle.failed"] == "true" and failed.current_stage == "Archived"
    assert resolve_model(prod, "models:/nodel/Production").version == "1"
    # The failed copy is never reused: a rerun registers a fresh version.
    again = promote(dev, no_delete, "nodel", version=second, smoke=False)
    assert again.created and again.version == "3"
    assert resolve_model(prod, "models:/nodel@production").version == "3"
