"""Bad input to the importers: one clear one-line error each, and nothing registered."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import joblib
import pytest

from lifecycle.base.errors import InvalidArgumentError, ModelImportError, UntrustedPickleError
from lifecycle.base.workspaces import Workspace, local_workspace
from lifecycle.imports import IMPORT_EXPERIMENT, import_model
from tests.support.origins import _skops_untrusted, build_notebook


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return local_workspace("dev", tmp_path_factory.mktemp("errors-ws"))


REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


@pytest.fixture(scope="module")
def designer_src() -> Path:
    """A real Train Model output (Designer's own modules); tests change copies of it."""
    return REAL / "designer" / "binary_logreg" / "trained_model_outputs"


@pytest.fixture(scope="module")
def automl_src() -> Path:
    """A real AutoML outputs/ folder (AutoML's own classes) without its mlflow-model/, as a
    "download best model" zip holds it; tests change copies of it."""
    return REAL / "automl" / "classification_lightgbm" / "outputs"


@pytest.fixture(scope="module")
def notebook_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_notebook(tmp_path_factory.mktemp("notebook"), "joblib").path


def _copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copytree(src, dest)
    return dest


def _fails(ws: Workspace, exc: type[Exception], match: str, path: Path, **kw: object) -> str:
    kw.setdefault("trust_pickle", True)
    with pytest.raises(exc, match=match) as info:
        import_model(ws, path, "bad", **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    client = ws.client()
    assert [m.name for m in client.search_registered_models()] == []
    exp = client.get_experiment_by_name(IMPORT_EXPERIMENT)
    if exp is not None:
        assert client.search_runs([exp.experiment_id]) == []
    return message


# ------------------------------------------------------------------------ common


def test_missing_source(ws: Workspace, tmp_path: Path) -> None:
    _fails(ws, ModelImportError, "does not exist", tmp_path / "nope.joblib")


def test_unknown_kind(ws: Workspace, notebook_src: Path) -> None:
    _fails(
        ws, InvalidArgumentError, "one of notebook, designer, automl", notebook_src, kind="spark"
    )


def test_undetectable_folder(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.txt").write_text("hi")
    _fails(ws, ModelImportError, "Cannot tell the origin", tmp_path / "stuff")


def test_zip_slip_is_refused_and_nothing_written(
    ws: Workspace, tmp_path: Path, designer_src: Path
) -> None:
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for f in designer_src.iterdir():
            zf.write(f, f"trained_model_outputs/{f.name}")
        zf.writestr("../../escaped.txt", "gotcha")
    msg = _fails(ws, ModelImportError, "zip slip", bad, kind="designer")
    assert "../../escaped.txt" in msg
    assert not list(tmp_path.parent.rglob("escaped.txt"))


# ----------------------------------------------------------------------- Designer


@pytest.mark.parametrize(
    "missing", ["_meta.yaml", "data.ilearner", "_schema.json", "_samples.json"]
)
def test_designer_missing_file(
    ws: Workspace, tmp_path: Path, designer_src: Path, missing: str
) -> None:
    src = _copy(designer_src, tmp_path)
    (src / missing).unlink()
    _fails(ws, ModelImportError, missing.replace(".", r"\."), src, kind="designer")


def test_designer_without_consent(ws: Workspace, designer_src: Path) -> None:
    msg = _fails(
        ws,
        UntrustedPickleError,
        "--trust-pickle",
        designer_src,
        kind="designer",
        trust_pickle=False,
    )
    assert "runs code" in msg


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_designer_pickle_outside_allow_list(
    ws: Workspace, tmp_path: Path, designer_src: Path
) -> None:
    src = _copy(designer_src, tmp_path)
    marker = tmp_path / "pwned"
    (src / "data.ilearner").write_bytes(pickle.dumps(_Exploit(marker)))
    msg = _fails(ws, ModelImportError, "outside the allow list", src, kind="designer")
    assert "system" in msg
    assert not marker.exists()


def test_designer_learner_outside_the_allow_list_is_refused_by_name(ws: Workspace) -> None:
    # A real Two-Class Support Vector Machine (Designer's own modules): its scoring is not
    # reproduced, so it is refused by name before anything is built.
    src = REAL / "designer" / "binary_svm" / "trained_model_outputs"
    _fails(
        ws,
        ModelImportError,
        "outside the allow list.*SupportVectorMachineBiClassifier",
        src,
        kind="designer",
    )


def test_designer_samples_in_unknown_shape(
    ws: Workspace, tmp_path: Path, designer_src: Path
) -> None:
    src = _copy(designer_src, tmp_path)
    (src / "_samples.json").write_text(json.dumps({"rows": [{"age": 1}]}))
    _fails(ws, ModelImportError, "list of row records", src, kind="designer")


def test_designer_schema_disagrees_with_features(
    ws: Workspace, tmp_path: Path, designer_src: Path
) -> None:
    src = _copy(designer_src, tmp_path)
    schema = json.loads((src / "_schema.json").read_text())
    schema["columnAttributes"] = [a for a in schema["columnAttributes"] if a["name"] != "income"]
    (src / "_schema.json").write_text(json.dumps(schema))
    _fails(
        ws, ModelImportError, "disagrees with the model's features.*income", src, kind="designer"
    )


def test_designer_schema_type_disagrees(ws: Workspace, tmp_path: Path, designer_src: Path) -> None:
    src = _copy(designer_src, tmp_path)
    schema = json.loads((src / "_schema.json").read_text())
    for a in schema["columnAttributes"]:
        if a["name"] == "age":
            a["type"], a["elementType"]["typeName"] = "String", "str"
    (src / "_schema.json").write_text(json.dumps(schema))
    _fails(ws, ModelImportError, "'age' is string in the schema but numeric", src, kind="designer")


def test_designer_generic_model_spec_not_implemented(
    ws: Workspace, tmp_path: Path, designer_src: Path
) -> None:
    src = _copy(designer_src, tmp_path)
    (src / "model_spec.yaml").write_text("flavor:\n  framework: sklearn\nmodel_file: model.pkl\n")
    _fails(ws, ModelImportError, "not implemented", src, kind="designer")


# ------------------------------------------------------------------------- AutoML


def _zip_layout(automl_src: Path, tmp_path: Path) -> Path:
    """A copy of the outputs as the "download best model" zip holds them (no mlflow-model/)."""
    src = _copy(automl_src, tmp_path)
    shutil.rmtree(src / "mlflow-model")
    return src


def test_automl_scoring_file_without_samples(
    ws: Workspace, tmp_path: Path, automl_src: Path
) -> None:
    src = _zip_layout(automl_src, tmp_path)
    for scoring in src.glob("scoring_file_v_*.py"):
        text = "\n".join(
            line
            for line in scoring.read_text().splitlines()
            if not line.startswith(("input_sample", "data_sample", "output_sample"))
        )
        scoring.write_text(text)
    _fails(ws, ModelImportError, "has no input sample", src, kind="automl")


def test_automl_scoring_file_is_never_executed(
    ws: Workspace, tmp_path: Path, automl_src: Path
) -> None:
    src = _zip_layout(automl_src, tmp_path)
    marker = tmp_path / "executed"
    for scoring in src.glob("scoring_file_v_*.py"):
        scoring.write_text(
            f"open({str(marker)!r}, 'w').write('x')\n" + "input_sample = make_frame()\n"
        )
    _fails(ws, ModelImportError, "has no input sample", src, kind="automl")
    assert not marker.exists()


def test_automl_scoring_file_disagrees_with_the_models_signature(
    ws: Workspace, tmp_path: Path, automl_src: Path
) -> None:
    src = _copy(automl_src, tmp_path)
    for scoring in src.glob("scoring_file_v_*.py"):
        scoring.write_text(scoring.read_text().replace('"income"', '"salary"'))
    _fails(
        ws,
        ModelImportError,
        "disagrees with the model's features: missing \\['income'\\]",
        src,
        kind="automl",
    )


def test_automl_without_scoring_file_or_signature(
    ws: Workspace, tmp_path: Path, automl_src: Path
) -> None:
    src = _zip_layout(automl_src, tmp_path)
    for scoring in src.glob("scoring_file_*.py"):
        scoring.unlink()
    _fails(ws, ModelImportError, "scoring file", src, kind="automl")


def test_automl_pickle_without_automl_runtime_is_not_an_automl_model(
    ws: Workspace, tmp_path: Path, automl_src: Path
) -> None:
    src = _zip_layout(automl_src, tmp_path)
    joblib.dump({"not": "a model"}, src / "model.pkl")
    _fails(ws, ModelImportError, "does not name AutoML's runtime", src, kind="automl")


def test_automl_pickle_needing_modules_outside_automl_runtime_is_refused(
    ws: Workspace, tmp_path: Path
) -> None:
    # A real AutoML mlflow-model whose pickle also names a module that neither this
    # environment nor AutoML's has: refused by reading the opcodes, no consent needed.
    real = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "automl"
    src = _copy(real / "classification_lightgbm" / "outputs" / "mlflow-model", tmp_path)
    (src / "model.pkl").write_bytes(b"\x80\x02cnot_installed_pkg.sub\nThing\n)\x81.")
    msg = _fails(ws, ModelImportError, "not installed", src, kind="automl", trust_pickle=False)
    assert "not_installed_pkg.sub" in msg


def test_automl_without_consent(ws: Workspace, automl_src: Path) -> None:
    _fails(
        ws, UntrustedPickleError, "--trust-pickle", automl_src, kind="automl", trust_pickle=False
    )


# ----------------------------------------------------------------------- notebook


def test_notebook_pickle_without_consent(ws: Workspace, notebook_src: Path) -> None:
    msg = _fails(ws, UntrustedPickleError, "--trust-pickle", notebook_src, trust_pickle=False)
    assert "runs code" in msg


def test_notebook_sample_missing_target(ws: Workspace, notebook_src: Path) -> None:
    sample = notebook_src.parent / "train.csv"
    _fails(
        ws,
        ModelImportError,
        "Target column 'churned' is not in sample",
        notebook_src,
        sample=sample,
        target="churned",
    )


def test_notebook_sample_missing_feature(ws: Workspace, tmp_path: Path, notebook_src: Path) -> None:
    import pandas as pd

    sample = tmp_path / "partial.csv"
    pd.read_csv(notebook_src.parent / "train.csv").drop(columns=["plan"]).to_csv(
        sample, index=False
    )
    _fails(
        ws,
        ModelImportError,
        "lacks the model's feature column.*plan",
        notebook_src,
        sample=sample,
        target="target",
    )


def test_notebook_file_not_an_estimator(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "thing.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    _fails(ws, ModelImportError, "not a fitted scikit-learn estimator", path)


def test_notebook_folder_without_mlmodel(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pkl").write_bytes(b"\x80\x04N.")
    _fails(ws, ModelImportError, "not an MLflow model directory", tmp_path / "m", kind="notebook")


def test_notebook_mlflow_dir_without_signature_gets_one_from_the_sample(
    ws: Workspace, tmp_path: Path
) -> None:
    # Not an error: the one bad-looking input the importer repairs (and says so in the model).
    import mlflow.sklearn
    from mlflow.models import Model

    origin = build_notebook(tmp_path / "o", "joblib")
    bare = tmp_path / "bare_mlflow_model"
    mlflow.sklearn.save_model(
        origin.model,
        str(bare),
        pip_requirements=["scikit-learn"],
        skops_trusted_types=_skops_untrusted(origin.model),
    )
    assert Model.load(str(bare / "MLmodel")).signature is None
    result = import_model(ws, bare, "bare", sample=origin.sample_csv, target="target")
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"{ws.client().get_model_version('bare', result.version).source}",
            dst_path=str(tmp_path / "dl"),
        )
    )
    signature = Model.load(str(local / "MLmodel")).signature
    assert signature is not None
    assert "target" not in signature.inputs.input_names()
    assert "plan" in signature.inputs.input_names()
    ws.client().delete_registered_model("bare")


class _Touch:
    """Unpickling this runs ``touch MARKER``: the consent check must come before any load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_notebook_mlflow_dir_that_needs_unpickling_needs_consent_even_with_a_sample(
    dev: Workspace, tmp_path: Path
) -> None:
    # Measured before: with --sample and no --trust-pickle, the baseline loaded the model with
    # pyfunc and the pickle ran. Now the import refuses before anything loads it.
    import mlflow.sklearn

    origin = build_notebook(tmp_path / "o", "joblib")
    pickled = tmp_path / "pickled_mlflow_model"
    mlflow.sklearn.save_model(
        origin.model,
        str(pickled),
        serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],
    )
    marker = tmp_path / "pwned"
    (pickled / "model.pkl").write_bytes(pickle.dumps(_Touch(marker)))
    msg = _fails(
        dev,
        UntrustedPickleError,
        "serialized with cloudpickle.*--trust-pickle",
        pickled,
        kind="notebook",
        sample=origin.sample_csv,
        target="target",
        trust_pickle=False,
    )
    assert "pickled_mlflow_model" in msg
    assert not marker.exists()


def test_the_consent_free_scan_imports_nothing_named_by_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pickle's module names come from the untrusted file: checking whether they are
    # installed must not import them (a package's __init__ would run).
    from models._unpickler import missing_modules

    pkg = tmp_path / "site" / "lifecycle_probe_pkg"
    (pkg / "sub").mkdir(parents=True)
    marker = tmp_path / "imported"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "sub" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "sub" / "mod.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = {
        ("lifecycle_probe_pkg.sub.mod", "Thing"),
        ("lifecycle_probe_pkg.sub", "Other"),
        ("lifecycle_probe_pkg.absent", "X"),
        ("sklearn.linear_model._logistic", "LogisticRegression"),
    }
    assert missing_modules(names) == ["lifecycle_probe_pkg.absent"]
    assert not marker.exists()
    assert "lifecycle_probe_pkg" not in sys.modules


@pytest.mark.parametrize("func", ["numpy.load", "pandas.read_pickle"])
def test_skops_file_with_a_function_skops_refuses_is_refused_by_name(
    dev: Workspace, tmp_path: Path, func: str
) -> None:
    # Before, every name under sklearn/numpy/scipy/pandas was declared trusted, functions
    # that skops refuses by default included.
    import importlib

    import skops.io
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    module, _, name = func.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    model = make_pipeline(FunctionTransformer(func=fn))
    path = tmp_path / "model.skops"
    skops.io.dump(model, str(path))
    msg = _fails(dev, ModelImportError, "skops does not trust", path, kind="notebook")
    assert name in msg
