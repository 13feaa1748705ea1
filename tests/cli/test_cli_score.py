"""`lifecycle score` and `lifecycle deploy azure-batch` through click, on a real dev workspace."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lifecycle.base.workspaces import Workspace, local_workspace
from lifecycle.cli import cli
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import save_logreg, scoring_frame


@pytest.fixture(scope="module")
def registered_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A project folder whose embedded dev workspace holds churn version 1 (built once)."""
    root = tmp_path_factory.mktemp("project")
    model_dir = save_logreg(root / "logreg")
    log_and_register(
        local_workspace("dev", root / ".lifecycle"),
        model_dir,
        "churn",
        experiment="import",
        trust_pickle=True,
    )
    return root, model_dir


@pytest.fixture
def project_dir(registered_project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(registered_project[0])
    return registered_project[0]


@pytest.fixture
def churn(registered_project: tuple[Path, Path], project_dir: Path) -> Path:
    return registered_project[1]


@pytest.fixture
def dev(project_dir: Path) -> Workspace:
    return local_workspace("dev", project_dir / ".lifecycle")


def test_score_writes_one_prediction_per_row_with_header(churn: Path, project_dir: Path) -> None:
    df = scoring_frame(120)
    df.to_csv(project_dir / "in.csv", index=False)
    result = CliRunner().invoke(
        cli,
        [
            "score",
            "models:/churn/1",
            "in.csv",
            "--output",
            "out.csv",
            "-w",
            "dev",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Scored 120 of 120 rows (0 rejected) into out.csv" in result.output
    out = pd.read_csv(project_dir / "out.csv")
    assert list(out.columns) == ["prediction"]
    expected = mlflow.pyfunc.load_model(str(churn)).predict(df[["f0", "f1", "f2", "n"]])
    np.testing.assert_array_equal(out["prediction"].to_numpy(), np.asarray(expected))


def test_output_with_a_trailing_slash_is_a_new_folder_of_one_output_per_input(
    churn: Path, project_dir: Path
) -> None:
    # Measured before (issue #22): "--output scored/" wrote one merged file named "scored".
    data = project_dir / "batch-in"
    data.mkdir(exist_ok=True)
    for i in range(2):
        scoring_frame(30 + i).to_csv(data / f"part-{i}.csv", index=False)
    out_dir = project_dir / "scored-new"
    assert not out_dir.exists()
    result = CliRunner().invoke(
        cli, ["score", "models:/churn/1", "batch-in/", "--output", "scored-new/", "-w", "dev"]
    )
    assert result.exit_code == 0, result.output
    assert out_dir.is_dir()
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "manifest.json",
        "part-0.scored.csv",
        "part-1.scored.csv",
    ]
    assert [len(pd.read_csv(out_dir / f"part-{i}.scored.csv")) for i in range(2)] == [30, 31]


def test_score_json_and_stage_uri(churn: Path, dev: Workspace, project_dir: Path) -> None:
    from lifecycle.base.workspaces import quiet_mlflow_warnings

    with quiet_mlflow_warnings():
        dev.client().transition_model_version_stage("churn", "1", "Production")
    scoring_frame(10).to_csv(project_dir / "in.csv", index=False)
    result = CliRunner().invoke(
        cli,
        ["score", "models:/churn/production", "in.csv", "-o", "o.parquet", "--json",
         "--workers", "1", "--keep-all"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["model_version"] == "1" and manifest["rows_scored"] == 10
    out = pd.read_parquet(project_dir / "o.parquet")
    assert list(out.columns) == [*scoring_frame(1).columns, "prediction"]


def test_score_missing_column_is_one_line_error(churn: Path, project_dir: Path) -> None:
    scoring_frame(5).drop(columns=["n"]).to_csv(project_dir / "in.csv", index=False)
    result = CliRunner().invoke(cli, ["score", "models:/churn/1", "in.csv", "-o", "never.csv"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: Model is missing inputs ['n']")
    assert "extra inputs: ['id', 'comment']" in lines[0]
    assert not (project_dir / "never.csv").exists()


def test_score_unknown_version_and_usage_errors(churn: Path, project_dir: Path) -> None:
    scoring_frame(5).to_csv(project_dir / "in.csv", index=False)
    result = CliRunner().invoke(cli, ["score", "models:/churn/7", "in.csv", "-o", "out.csv"])
    assert result.exit_code == 1 and "Existing versions: 1" in result.output
    result = CliRunner().invoke(cli, ["score", "models:/churn/1", "in.csv"])
    assert result.exit_code == 2 and "--output" in result.output
    result = CliRunner().invoke(
        cli, ["score", "models:/churn/1", "in.csv", "-o", "o.csv", "--max-error-rate", "3"]
    )
    assert result.exit_code == 2


@pytest.mark.parametrize("args", [["score"], ["deploy", "azure-batch"]])
def test_help_has_an_example(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_deploy_azure_batch_writes_specs_the_sdk_loads(churn: Path, project_dir: Path) -> None:
    from azure.ai.ml import load_batch_deployment, load_model

    result = CliRunner().invoke(
        cli,
        ["deploy", "azure-batch", "churn", "--version", "1", "--endpoint", "churn-batch",
         "--compute", "cpu-cluster", "--mini-batch-size", "4", "--instance-count", "2",
         "--max-error-rate", "1", "--out", "specs", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = json.loads(result.output)["files"]
    dep = load_batch_deployment(source=files["deployment"])
    assert (dep.endpoint_name, dep.compute, dep.mini_batch_size) == (
        "churn-batch",
        "cpu-cluster",
        4,
    )
    assert dep.resources.instance_count == 2 and dep.error_threshold == -1
    model = load_model(source=files["model"])
    assert model.type == "mlflow_model" and (Path(model.path) / "MLmodel").is_file()

    bad = CliRunner().invoke(
        cli,
        ["deploy", "azure-batch", "churn", "--version", "1", "--endpoint", "x_bad",
         "--compute", "cpu", "--out", "specs2"],
    )  # fmt: skip
    assert bad.exit_code == 1 and "Invalid Azure ML endpoint name 'x_bad'" in bad.output
    text = CliRunner().invoke(
        cli,
        ["deploy", "azure-batch", "churn", "--version", "1", "--endpoint", "churn-batch",
         "--compute", "cpu", "--out", "specs3"],
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    lines = text.output.strip().splitlines()
    assert lines[-1] == "(plan only; --apply creates it)"  # as azure-online says
    assert any(line.startswith("deployment: ") for line in lines)


def test_registry_uri_resolved_in_a_child_process(churn: Path, project_dir: Path) -> None:
    """`lifecycle score models:/...` as users run it (a fresh process, MLflow not imported):
    the version is resolved and downloaded by `python -m lifecycle.base.fetch --child`, and its
    errors come back with the same one-line text as when resolved in process."""
    import subprocess
    import sys

    df = scoring_frame(300)
    df.to_csv(project_dir / "in.csv", index=False)
    cmd = [sys.executable, "-m", "lifecycle", "score", "in.csv", "--keep-columns", "id"]
    proc = subprocess.run(
        [*cmd[:4], "models:/churn/1", *cmd[4:], "-o", "child.csv", "--json"],
        capture_output=True, text=True, check=False, cwd=project_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads(proc.stdout)
    assert (manifest["model_name"], manifest["model_version"]) == ("churn", "1")
    assert manifest["rows_scored"] == 300 and manifest["run_id"]
    expected = mlflow.pyfunc.load_model(str(churn)).predict(df[["f0", "f1", "f2", "n"]])
    got = pd.read_csv(project_dir / "child.csv")
    np.testing.assert_array_equal(got["prediction"].to_numpy(), np.asarray(expected))

    in_process = CliRunner().invoke(cli, ["score", "models:/churn/7", "in.csv", "-o", "x.csv"])
    proc = subprocess.run(
        [*cmd[:4], "models:/churn/7", *cmd[4:], "-o", "x.csv"],
        capture_output=True, text=True, check=False, cwd=project_dir,
    )  # fmt: skip
    assert proc.returncode == in_process.exit_code == 1
    assert proc.stderr.strip() == in_process.output.strip()
    assert "Existing versions: 1" in proc.stderr and not (project_dir / "x.csv").exists()
