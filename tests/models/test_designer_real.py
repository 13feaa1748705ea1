"""Real Designer models (made by Designer's own modules, tests/fixtures/real/designer) import,
score in batch and serve exactly like Designer's Score Model: labels equal, probabilities
within 1e-9, Designer's column names and order."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from lifecycle.base.workspaces import Workspace, use_workspace
from lifecycle.cli import cli
from lifecycle.cli.background import start_background

DESIGNER = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "designer"
#: Real Designer learners whose scoring the importer does not reproduce: refused by name.
REFUSED = {"binary_svm": "SupportVectorMachineBiClassifier"}
CASES = sorted(p.name for p in DESIGNER.iterdir() if p.is_dir() and p.name not in REFUSED)


def _holdout(case: str) -> pd.DataFrame:
    """The rows Score Model scored, as a CSV or JSON client sends them (text, not category)."""
    frame = pd.read_parquet(DESIGNER / case / "holdout.parquet")
    return frame.astype({c: object for c in frame.columns if str(frame[c].dtype) == "category"})


def _assert_like_score_model(got: pd.DataFrame, case: str) -> None:
    expected = pd.read_parquet(DESIGNER / case / "expected.parquet")
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for col in expected.columns:
        if pd.api.types.is_numeric_dtype(expected[col]):
            want = expected[col].to_numpy(dtype="float64")
            have = got[col].to_numpy(dtype="float64")
            np.testing.assert_allclose(have, want, rtol=0, atol=1e-9, err_msg=f"{case} {col}")
        else:
            assert got[col].astype(str).tolist() == expected[col].astype(str).tolist(), col


def _import(name: str, case: str, *extra: str) -> CliRunner:
    folder = DESIGNER / case / "trained_model_outputs"
    return CliRunner().invoke(
        cli, ["import", "designer", str(folder), "--name", name, "--trust-pickle", *extra]
    )


@pytest.mark.parametrize("case", CASES)
def test_real_designer_model_scores_like_score_model(dev: Workspace, case: str) -> None:
    result = _import(f"designer-{case}", case)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"designer-{case} version 1"
    with use_workspace(dev):
        model = mlflow.pyfunc.load_model(f"models:/designer-{case}/1")
    _assert_like_score_model(pd.DataFrame(model.predict(_holdout(case))), case)


def test_real_designer_model_needs_consent_and_registers_nothing(dev: Workspace) -> None:
    folder = DESIGNER / "binary_logreg" / "trained_model_outputs"
    result = CliRunner().invoke(cli, ["import", "designer", str(folder), "--name", "nope"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--trust-pickle" in lines[0]
    assert dev.client().search_registered_models() == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ["binary_logreg", "multiclass_forest"])
def test_real_designer_model_batch_and_serving_answer_like_score_model(
    dev: Workspace, project_dir: Path, case: str
) -> None:
    name = f"designer-{case}"
    assert _import(name, case).exit_code == 0
    holdout = _holdout(case)
    csv = project_dir / "holdout.csv"
    holdout.to_csv(csv, index=False)
    out = project_dir / "scored.csv"
    scored = CliRunner().invoke(
        cli, ["score", f"models:/{name}/1", str(csv), "--output", str(out), "-w", "dev"]
    )
    assert scored.exit_code == 0, scored.output
    batch = pd.read_csv(out)
    _assert_like_score_model(batch[[c for c in batch.columns if c.startswith("Scored ")]], case)

    split = json.loads(holdout.to_json(orient="split", index=False))
    with start_background(f"models:/{name}/1", workspace="dev", cwd=project_dir) as server:
        mlflow_answer = requests.post(
            server.url + "/invocations", json={"dataframe_split": split}, timeout=60
        )
        azure_answer = requests.post(
            server.url + "/invocations",
            json={"input_data": {**split, "index": list(range(len(holdout)))}},
            timeout=60,
        )
    assert mlflow_answer.status_code == 200, mlflow_answer.text
    assert azure_answer.status_code == 200, azure_answer.text
    _assert_like_score_model(pd.DataFrame(mlflow_answer.json()["predictions"]), case)
    _assert_like_score_model(pd.DataFrame(azure_answer.json()), case)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_real_designer_learner_not_reproduced_is_refused_by_name(dev: Workspace, case: str) -> None:
    result = _import(f"designer-{case}", case)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and REFUSED[case] in lines[0] and "allow list" in lines[0]
    assert dev.client().search_registered_models() == []
