"""The committed real-artifact fixtures (tests/fixtures/real/) were made by Microsoft's own
packages with the current recipe, and hold what those packages write."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from models._unpickler import scan_pickle_globals
from tests.support.real.envs import recipe_hash

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real"
DESIGNER = FIXTURES / "designer"
DESIGNER_CASES = sorted(p.name for p in DESIGNER.iterdir() if p.is_dir())


def test_designer_fixtures_were_made_by_the_current_recipe() -> None:
    manifest = json.loads((DESIGNER / "manifest.json").read_text())
    assert manifest["recipe_hash"] == recipe_hash("designer"), (
        "tests/support/real/designer.lock changed: run `make fixtures` to rebuild the fixtures"
    )
    assert manifest["cases"] == DESIGNER_CASES
    assert manifest["packages"]["azureml-designer-classic-modules"] == "0.0.195"
    # At least: binary (a linear and a tree learner), multiclass and regression.
    assert {"binary_logreg", "binary_forest", "multiclass_forest", "regression_linear"} <= set(
        DESIGNER_CASES
    )


@pytest.mark.parametrize("case", DESIGNER_CASES)
def test_designer_fixture_has_train_models_real_layout(case: str) -> None:
    folder = DESIGNER / case / "trained_model_outputs"
    meta = yaml.safe_load((folder / "_meta.yaml").read_text())
    spec = yaml.safe_load((folder / "model_spec.yaml").read_text())
    assert meta["type"] == "ModelDirectory"
    assert meta["modelOutputPath"] == "trained_model_outputs"
    assert spec == {"model_type": "ILearnerDotNet", "file_name": "data.ilearner"}
    names = scan_pickle_globals(folder / "data.ilearner")
    assert names is not None
    modules = {m for m, _ in names}
    assert "azureml.studio.modules.ml.model_deployment.model_deployment_handler" in modules
    assert "azureml.studio.modules.ml.common.normalizer" in modules
    info = json.loads((DESIGNER / case / "case.json").read_text())
    expected = pd.read_parquet(DESIGNER / case / "expected.parquet")
    holdout = pd.read_parquet(DESIGNER / case / "holdout.parquet")
    assert list(expected.columns) == info["score_columns"]
    assert len(expected) == len(holdout) == info["holdout_rows"]
    assert info["label"] not in holdout.columns
    assert holdout.isna().any().any(), "the holdout keeps missing values"
    if info["task"] == "regression":
        assert list(expected.columns) == ["Scored Labels"]
    elif info["task"] == "binary":
        assert list(expected.columns) == ["Scored Labels", "Scored Probabilities"]
        assert set(expected["Scored Labels"]) <= {"yes", "no"}
    else:
        assert expected.columns[-1] == "Scored Labels"
        assert all(c.startswith("Scored Probabilities_") for c in expected.columns[:-1])


AUTOML = FIXTURES / "automl"
AUTOML_CASES = sorted(p.name for p in AUTOML.iterdir() if p.is_dir())


def test_automl_fixtures_were_made_by_the_current_recipe() -> None:
    manifest = json.loads((AUTOML / "manifest.json").read_text())
    assert manifest["recipe_hash"] == recipe_hash("automl"), (
        "lifecycle/base/recipes/automl.lock changed: run `make fixtures` to rebuild the fixtures"
    )
    assert manifest["cases"] == AUTOML_CASES
    assert manifest["packages"]["azureml-automl-runtime"] == "1.62.0.post1"
    assert {"classification_lightgbm", "classification_ensemble", "regression_lightgbm"} <= set(
        AUTOML_CASES
    )


@pytest.mark.parametrize("case", AUTOML_CASES)
def test_automl_fixture_has_a_runs_real_outputs(case: str) -> None:
    import zipfile

    outputs = AUTOML / case / "outputs"
    for name in (
        "model.pkl",
        "conda_env_v_1_0_0.yml",
        "scoring_file_v_1_0_0.py",
        "scoring_file_v_2_0_0.py",
        "scoring_file_pbi_v_1_0_0.py",
        "run_id.txt",
    ):
        assert (outputs / name).is_file(), name
    mlmodel = yaml.safe_load((outputs / "mlflow-model" / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "pickle"
    assert json.loads(mlmodel["signature"]["inputs"])  # named columns from the training data
    # The run writes the same pickle twice: outputs/model.pkl and the MLflow model's.
    assert (outputs / "model.pkl").read_bytes() == (
        outputs / "mlflow-model" / "model.pkl"
    ).read_bytes()
    with zipfile.ZipFile(AUTOML / case / "automl_best_model.zip") as zf:
        assert sorted(zf.namelist()) == [
            "conda_env_v_1_0_0.yml",
            "model.pkl",
            "scoring_file_v_1_0_0.py",
        ]
    names = scan_pickle_globals(outputs / "model.pkl")
    assert names is not None
    modules = {m for m, _ in names}
    assert "azureml.automl.runtime.featurization.data_transformer" in modules
    info = json.loads((AUTOML / case / "case.json").read_text())
    expected = pd.read_parquet(AUTOML / case / "expected.parquet")
    assert list(expected.columns) == info["expected_columns"]
    assert len(expected) == info["holdout_rows"] == len(pd.read_csv(AUTOML / case / "holdout.csv"))
    if "ensemble" in case:
        assert "azureml.training.tabular.models.voting_ensemble" in modules


def test_automl_model_environment_is_the_recipe_the_fixtures_were_made_with() -> None:
    """An imported AutoML model runs in the environment the fixtures were made in: the same
    steps, the same lock (so AutoML's own outputs are the oracle of what it computes)."""
    from lifecycle.base.envs import automl_spec
    from tests.support.real.envs import BEFORE, LOCKS, NO_DEPS

    spec = automl_spec()
    assert spec.steps == (
        *BEFORE["automl"],
        ("-r", "automl.lock"),
        ("--no-deps", *NO_DEPS["automl"]),
    )
    assert spec.files["automl.lock"] == LOCKS["automl"].read_text(encoding="utf-8")
