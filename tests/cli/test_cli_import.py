"""``lifecycle import``: thin commands over lifecycle.imports, checked through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from tests.support.origins import build_notebook

REAL_DESIGNER = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "designer"


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_notebook(tmp_path_factory.mktemp("nb"), "joblib").path


@pytest.fixture(scope="module")
def designer() -> Path:
    """A real Train Model output (Designer's own modules)."""
    return REAL_DESIGNER / "multiclass_forest" / "trained_model_outputs"


def _nb_args(path: Path) -> list[str]:
    return [
        str(path),
        "--name",
        "churn",
        "--sample",
        str(path.parent / "train.csv"),
        "--target",
        "target",
    ]


def test_notebook_pickle_needs_consent(dev: Workspace, notebook: Path) -> None:
    result = CliRunner().invoke(cli, ["import", "notebook", *_nb_args(notebook)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "runs code" in lines[0] and "--trust-pickle" in lines[0]
    assert dev.client().search_registered_models() == []


def test_notebook_import_reimport_and_force(dev: Workspace, notebook: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["import", "notebook", *_nb_args(notebook), "--trust-pickle"])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "churn version 1"

    again = runner.invoke(
        cli, ["import", "notebook", *_nb_args(notebook), "--trust-pickle", "--json"]
    )
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert (data["version"], data["created"], data["kind"], data["format"]) == (
        "1",
        False,
        "notebook",
        "joblib",
    )

    forced = runner.invoke(
        cli, ["import", "notebook", *_nb_args(notebook), "--trust-pickle", "--force", "-w", "dev"]
    )
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.strip() == "churn version 2"
    versions = dev.client().search_model_versions("name='churn'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    v1 = dev.client().get_model_version("churn", "1")
    assert v1.tags["lifecycle.origin.kind"] == "notebook"


def test_import_without_kind_detects_designer(dev: Workspace, designer: Path) -> None:
    result = CliRunner().invoke(
        cli, ["import", str(designer), "--name", "credit", "--trust-pickle"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Detected designer (model_directory)")
    assert lines[-1] == "credit version 1"
    assert dev.client().get_model_version("credit", "1").tags["lifecycle.origin.kind"] == "designer"


def test_import_into_other_workspace(prod: Workspace, dev: Workspace, designer: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["import", "designer", str(designer), "--name", "credit", "--trust-pickle", "-w", "prod"],
    )
    assert result.exit_code == 0, result.output
    assert (
        prod.client().get_model_version("credit", "1").tags["lifecycle.origin.kind"] == "designer"
    )
    assert dev.client().search_registered_models() == []


def test_missing_file_is_one_line(dev: Workspace, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["import", "notebook", str(tmp_path / "nope.joblib"), "--name", "x"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: Source '{tmp_path / 'nope.joblib'}' does not exist"
    ]


def test_automl_bad_folder(dev: Workspace, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["import", "automl", str(tmp_path), "--name", "x", "--trust-pickle"]
    )
    assert result.exit_code == 1
    assert "is not an AutoML output" in result.stderr


def test_usage_errors_exit_2(dev: Workspace, notebook: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["import", "notebook", str(notebook)]).exit_code == 2  # no --name
    assert (
        runner.invoke(
            cli, ["import", "notebook", str(notebook), "--name", "x", "--bogus"]
        ).exit_code
        == 2
    )


def test_help_has_examples() -> None:
    runner = CliRunner()
    for args in (["import"], ["import", "notebook"], ["import", "designer"], ["import", "automl"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output and "lifecycle import" in result.output


def test_group_help_lists_the_options_of_the_form_without_a_kind() -> None:
    result = CliRunner().invoke(cli, ["import", "--help"])
    assert result.exit_code == 0
    section = result.output.split("Options of 'lifecycle import PATH' (kind detected):", 1)[1]
    for option in ("--name", "--sample", "--target", "--trust-pickle", "--force",
                   "--max-archive-bytes", "--workspace", "--json"):  # fmt: skip
        assert option in section, option
    for kind in ("designer", "automl"):
        sample = CliRunner().invoke(cli, ["import", kind, "--help"]).output
        assert "monitoring baseline (every kind)" in " ".join(sample.split())


def test_designer_import_into_remote_server(remote: Workspace, tmp_path: Path) -> None:
    """Over HTTP into a real ``mlflow server``: registered, loadable, same predictions."""
    import mlflow.pyfunc
    import pandas as pd

    from lifecycle.base.workspaces import use_workspace
    from lifecycle.imports import import_designer

    case = REAL_DESIGNER / "binary_forest"
    origin = case / "trained_model_outputs"
    holdout = pd.read_parquet(case / "holdout.parquet")
    holdout = holdout.astype(
        {c: object for c in holdout.columns if str(holdout[c].dtype) == "category"}
    )
    name = f"designer_remote_{tmp_path.name}"
    result = import_designer(remote, origin, name, trust_pickle=True)
    assert result.created and result.workspace == "remote"
    with use_workspace(remote):
        model = mlflow.pyfunc.load_model(f"models:/{name}/{result.version}")
    pd.testing.assert_frame_equal(
        model.predict(holdout).reset_index(drop=True),
        pd.read_parquet(case / "expected.parquet"),
        check_dtype=False,
        rtol=0,
        atol=1e-9,
    )
    again = import_designer(remote, origin, name, trust_pickle=True)
    assert (again.created, again.version) == (False, result.version)


def test_reimporting_a_zip_of_the_same_folder_reuses_the_version(
    dev: Workspace, designer: Path, tmp_path: Path
) -> None:
    """A folder and a zip of it are the same source: the README's re-import shows version 1."""
    import shutil

    first = CliRunner().invoke(
        cli, ["import", "designer", str(designer), "--name", "same", "--trust-pickle"]
    )
    assert first.exit_code == 0, first.output
    zipped = shutil.make_archive(
        str(tmp_path / "model"), "zip", root_dir=designer.parent, base_dir=designer.name
    )
    again = CliRunner().invoke(
        cli, ["import", "designer", zipped, "--name", "same", "--trust-pickle"]
    )
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == "same version 1"
    assert "already imported" in again.stdout
    assert len(dev.client().search_model_versions("name='same'")) == 1


def test_run_id_carries_the_training_metrics_and_holdout_gives_the_reference(
    dev: Workspace, project_dir: Path
) -> None:
    """Issue #22 item 2: `train` prints the import that ties the version to its training run;
    the README's `accuracy` gate then passes, and holdout metrics are the plain-named ones."""
    import re

    from lifecycle.base.tags import REFERENCE_METRICS_TAG, TRAINING_RUN_TAG

    trained = CliRunner().invoke(cli, ["train", "--out-dir", "nb"])
    assert trained.exit_code == 0, trained.output
    run_id = re.search(r"^run: (\w+)$", trained.output, re.M).group(1)  # type: ignore[union-attr]
    printed = [ln.strip() for ln in trained.output.splitlines() if "--run-id" in ln]
    assert printed == [
        "lifecycle import notebook nb/model.joblib --name NAME --sample nb/sample.csv "
        f"--target target --run-id {run_id} --trust-pickle"
    ]
    base = ["import", "notebook", "nb/model.joblib", "--name", "churn", "--sample",
            "nb/sample.csv", "--target", "target", "--trust-pickle"]  # fmt: skip
    bad = CliRunner().invoke(cli, [*base, "--run-id", "nosuchrun"])
    assert bad.exit_code == 1 and "Training run 'nosuchrun' not found in workspace 'dev'" in (
        bad.output
    )
    assert not dev.client().search_registered_models()
    no_target = CliRunner().invoke(cli, [*base[:7], "--holdout", "nb/holdout.csv"])
    assert no_target.exit_code == 1 and "--holdout needs --target" in no_target.output

    done = CliRunner().invoke(
        cli, [*base, "--run-id", run_id, "--holdout", "nb/holdout.csv", "--json"]
    )
    assert done.exit_code == 0, done.output
    mv = dev.client().get_model_version("churn", "1")
    assert mv.tags[TRAINING_RUN_TAG] == run_id
    assert mv.tags[REFERENCE_METRICS_TAG] == "holdout holdout.csv"
    metrics = dev.client().get_run(mv.run_id).data.metrics
    training = dev.client().get_run(run_id).data.metrics
    assert metrics["training_accuracy"] == pytest.approx(training["accuracy"])
    assert 0.9 < metrics["accuracy"] <= 1.0 and "sample_accuracy" in metrics
    promoted = CliRunner().invoke(
        cli, ["promote", "churn", "--version", "1", "--from", "dev", "--to", "prod",
              "--gate", "accuracy>=0.9", "--no-smoke"],
    )  # fmt: skip
    assert promoted.exit_code == 0, promoted.output
