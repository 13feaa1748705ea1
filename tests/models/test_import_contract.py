"""One contract, every importer: origin artifact -> registered MLflow model that predicts
exactly what the origin predicted, with a signature, a valid input example, pinned
requirements and provenance, and a re-import that reuses the version."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle.base.loader import load_pyfunc
from lifecycle.base.tags import ORIGIN_FORMAT_TAG, ORIGIN_KIND_TAG, SOURCE_NAME_TAG, SOURCE_SHA_TAG
from lifecycle.base.workspaces import Workspace, local_workspace, use_workspace
from lifecycle.imports import import_model
from models.common import sha256_path
from tests.support.origins import build_notebook


def _notebook(fmt: str) -> Callable[[Path], dict[str, Any]]:
    def build(root: Path) -> dict[str, Any]:
        o = build_notebook(root, fmt)
        return {
            "path": o.path,
            "holdout": o.holdout,
            "expected": o.expected,
            "sample": o.sample_csv,
            "target": "target",
            "kind": "notebook",
            "fmt": fmt,
        }

    return build


REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def _zip(folder: Path, dest: Path) -> Path:
    import shutil

    return Path(shutil.make_archive(str(dest), "zip", root_dir=folder.parent, base_dir=folder.name))


def _designer(case: str, *, as_zip: bool = False) -> Callable[[Path], dict[str, Any]]:
    """A real Train Model output (made by Designer's own modules) and Score Model's output."""

    def build(root: Path) -> dict[str, Any]:
        import shutil

        src = REAL / "designer" / case
        root.mkdir(parents=True)
        path = Path(shutil.copytree(src / "trained_model_outputs", root / "trained_model_outputs"))
        holdout = pd.read_parquet(src / "holdout.parquet")
        holdout = holdout.astype(
            {c: object for c in holdout.columns if str(holdout[c].dtype) == "category"}
        )
        return {
            "path": _zip(path, root / "model") if as_zip else path,
            "holdout": holdout,
            "expected": pd.read_parquet(src / "expected.parquet"),
            "kind": "designer",
            "fmt": "model_directory",
        }

    return build


def _automl(case: str, layout: str, fmt: str) -> Callable[[Path], dict[str, Any]]:
    """A real AutoML output (made by AutoML's own classes) and its pipeline's predictions."""

    def build(root: Path) -> dict[str, Any]:
        src = REAL / "automl" / case
        return {
            "path": src / layout,
            "holdout": pd.read_csv(src / "holdout.csv"),
            "expected": pd.read_parquet(src / "expected.parquet")["predict"].to_numpy(),
            "kind": "automl",
            "fmt": fmt,
        }

    return build


ORIGINS: dict[str, tuple[Callable[[Path], dict[str, Any]], bool]] = {
    # name: (builder, detect the kind instead of naming it)
    "notebook-joblib": (_notebook("joblib"), False),
    "notebook-pickle": (_notebook("pickle"), True),
    "notebook-skops": (_notebook("skops"), False),
    "notebook-mlflow": (_notebook("mlflow"), True),
    "designer-binary-logreg": (_designer("binary_logreg"), False),
    "designer-binary-forest-zip": (_designer("binary_forest", as_zip=True), True),
    "designer-multiclass-forest": (_designer("multiclass_forest"), True),
    "designer-regression-linear": (_designer("regression_linear"), False),
    "automl-outputs": (_automl("classification_ensemble", "outputs", "mlflow_model"), False),
    "automl-best-model-zip": (
        _automl("classification_lightgbm", "automl_best_model.zip", "automl_outputs"),
        True,
    ),
    "automl-mlflow-model": (
        _automl("regression_lightgbm", "outputs/mlflow-model", "mlflow_model"),
        True,
    ),
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One embedded workspace for the module (each origin registers its own model name)."""
    return local_workspace("dev", tmp_path_factory.mktemp("contract-ws"))


@pytest.mark.parametrize("origin", list(ORIGINS))
def test_import_contract(
    origin: str, ws: Workspace, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model, validate_schema

    builder, detect = ORIGINS[origin]
    if origin.startswith("automl"):
        request.getfixturevalue("automl_env")
    art = builder(tmp_path / "origin")
    name = origin.replace("-", "_")
    result = import_model(
        ws,
        art["path"],
        name,
        kind=None if detect else art["kind"],
        sample=art.get("sample"),
        target=art.get("target"),
        trust_pickle=True,
    )
    assert (result.created, result.version, result.kind, result.fmt) == (
        True,
        "1",
        art["kind"],
        art["fmt"],
    )
    assert (result.detected is not None) == detect

    uri = f"models:/{name}/1"
    with use_workspace(ws):
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    # Through the toolkit's loader: an AutoML model runs in AutoML's own environment.
    model = load_pyfunc(str(local))

    # Predictions equal the origin's on held-out rows (Designer: every scored column).
    predictions = model.predict(art["holdout"])
    if art["kind"] == "designer":
        expected = art["expected"]
        assert list(predictions.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(
            predictions.reset_index(drop=True), expected, check_dtype=False, rtol=0, atol=1e-12
        )
        assert predictions["Scored Labels"].nunique() > 1
    else:
        assert np.array_equal(np.asarray(predictions), art["expected"])

    # Signature, and an input example that validates against it and scores.
    meta = Model.load(str(local / "MLmodel"))
    assert meta.signature is not None and meta.signature.inputs.input_names()
    example = meta.load_input_example(str(local))
    assert example is not None and len(example) > 0
    validate_schema(example, meta.signature.inputs)
    assert len(model.predict(example)) == len(example)

    # Requirements present and pinned (built models: to this environment; AutoML: to
    # AutoML's own, in which it runs).
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("scikit-learn") for r in reqs)
    if art["kind"] == "automl":
        assert "azureml-automl-runtime==1.62.0.post1" in reqs
        assert all("==" in r for r in reqs)
    elif art["fmt"] != "mlflow":
        assert "mlflow==" + mlflow.__version__ in reqs
        assert all("==" in r for r in reqs)

    # Provenance on the version and on the run, plus the provenance record artifact.
    client = ws.client()
    version = client.get_model_version(name, "1")
    run = client.get_run(version.run_id)
    expected_tags = {
        ORIGIN_KIND_TAG: art["kind"],
        ORIGIN_FORMAT_TAG: art["fmt"],
        SOURCE_NAME_TAG: Path(art["path"]).name,
        SOURCE_SHA_TAG: sha256_path(Path(art["path"])),
    }
    for key, value in expected_tags.items():
        assert version.tags.get(key) == value, key
        assert run.data.tags.get(key) == value, key
    prov = Path(
        client.download_artifacts(version.run_id, "provenance/provenance.json", str(tmp_path))
    )
    assert json.loads(prov.read_text())["source_sha256"] == expected_tags[SOURCE_SHA_TAG]

    if art["kind"] == "designer":
        # Only sklearn objects (skops) and our own code: no pickle, no Designer class.
        assert not list(local.rglob("*.pkl"))
        spec = json.loads(next(local.rglob("spec.json")).read_text())
        assert all(
            t.split(".")[0] in ("sklearn", "numpy", "scipy") for t in spec["skops_trusted_types"]
        )
        names = {f.path for f in client.list_artifacts(version.run_id, "provenance")}
        assert {"provenance/conda_env.yaml", "provenance/_schema.json"} <= names

    # Re-import: the same version, nothing new.
    again = import_model(
        ws,
        art["path"],
        name,
        kind=art["kind"],
        sample=art.get("sample"),
        target=art.get("target"),
        trust_pickle=True,
    )
    assert (again.created, again.version) == (False, "1")
    assert len(client.search_model_versions(f"name='{name}'")) == 1


def test_designer_model_runs_without_project_code(tmp_path: Path) -> None:
    """The Designer model is self-contained: it loads and scores in a fresh interpreter
    where neither this project's packages nor any azureml module can be imported."""
    import subprocess
    import sys

    from models.designer import build_designer_model

    art = _designer("multiclass_forest")(tmp_path / "origin")
    built = build_designer_model(art["path"], tmp_path / "model", trust_pickle=True)
    art["holdout"].to_pickle(tmp_path / "holdout.pkl")
    script = (
        "import sys, pandas as pd\n"
        "for blocked in ('models', 'lifecycle', 'azureml'):\n"
        "    sys.modules[blocked] = None\n"
        "import mlflow.pyfunc\n"
        f"m = mlflow.pyfunc.load_model({str(built.model_dir)!r})\n"
        f"m.predict(pd.read_pickle({str(tmp_path / 'holdout.pkl')!r})).to_pickle("
        f"{str(tmp_path / 'out.pkl')!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pd.testing.assert_frame_equal(
        pd.read_pickle(tmp_path / "out.pkl").reset_index(drop=True),
        art["expected"],
        check_dtype=False,
    )
