"""Make real Azure ML AutoML artifacts with AutoML's own classes and writers (run inside the
automl environment of :mod:`tests.support.real.envs`; ``python -m tests.support.real.build
automl`` drives it). No workspace is needed.

Per case: the featurizer is AutoML's ``DataTransformer`` as AutoML suggests it for the data
(``_suggest_featurizers_and_create_datatransformer``), the estimators AutoML's own wrappers
(``LightGBMClassifier``, ``LightGBMRegressor``, ``StandardScalerWrapper``) or its
``PreFittedSoftVotingClassifier`` ensemble. ``outputs/`` is written by AutoML's run context
(``OfflineAutoMLRunContext.batch_save_artifacts``: its default pickler for ``model.pkl``, its
scoring-file and conda-file writers, and its MLflow-model writer, which calls
``mlflow.sklearn.log_model``), exactly as a run does. Written per case under ``OUT/<case>/``:
``outputs/`` (with ``mlflow-model/``), ``automl_best_model.zip`` (the studio's "download
best model": model.pkl, conda_env_v_1_0_0.yml, scoring_file_v_1_0_0.py), ``holdout.csv``, and
``expected.parquet``: the pipeline's own ``predict`` (and ``predict_proba``, one column per
class) on ``pd.read_csv(holdout.csv)``, read as the scorer will read it.

Usage (inside the environment): ``python automl_build.py OUT [CASE...]``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import automl_shim  # noqa: E402, F401  (before anything else of AutoML is imported)
from fixture_data import make_data  # noqa: E402

#: case -> (task, label column, estimator kind)
CASES: dict[str, tuple[str, str, str]] = {
    "classification_lightgbm": ("classification", "churned", "lightgbm"),
    "classification_ensemble": ("classification", "churned", "ensemble"),
    "regression_lightgbm": ("regression", "spend", "lightgbm"),
}
ZIP_FILES = ("model.pkl", "conda_env_v_1_0_0.yml", "scoring_file_v_1_0_0.py")


def build_pipeline(task: str, kind: str, train: Any, y: Any) -> Any:
    """Fit the case's pipeline with AutoML's own classes, shaped as AutoML shapes its best
    model: ``Pipeline([("datatransformer", DataTransformer), (model step)])``, where an
    ensemble's members are pipelines over the featurized data."""
    import numpy as np
    from azureml.automl.runtime.data_transformation import (
        _suggest_featurizers_and_create_datatransformer,
    )
    from azureml.automl.runtime.shared.model_wrappers import (
        LightGBMClassifier,
        LightGBMRegressor,
        StandardScalerWrapper,
    )
    from azureml.training.tabular.models.voting_ensemble import PreFittedSoftVotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    dt = _suggest_featurizers_and_create_datatransformer(
        task=task, X=train, y=y, enable_feature_sweeping=False, is_cross_validation=False
    )
    dt.fit(train, y)
    features = dt.transform(train)
    lgbm = {"random_state": 0, "n_estimators": 40, "num_leaves": 8, "min_child_samples": 5}
    if task == "regression":
        step: Any = ("lightgbmregressor", LightGBMRegressor(**lgbm).fit(features, y))
    elif kind == "lightgbm":
        step = ("lightgbmclassifier", LightGBMClassifier(**lgbm).fit(features, y))
    else:
        first = Pipeline([("lightgbmclassifier", LightGBMClassifier(**lgbm))]).fit(features, y)
        second = Pipeline(
            [
                ("standardscalerwrapper", StandardScalerWrapper(with_mean=False)),
                ("logisticregression", LogisticRegression(C=0.5, max_iter=500)),
            ]
        ).fit(features, y)
        ensemble = PreFittedSoftVotingClassifier(
            estimators=[("0", first), ("1", second)],
            weights=np.array([0.6, 0.4]),
            classification_labels=np.unique(y),
        )
        step = ("prefittedsoftvotingclassifier", ensemble)
    return Pipeline([("datatransformer", dt), step])


def write_outputs(pipeline: Any, task: str, train: Any, y: Any, dest: Path) -> None:
    """``outputs/`` and ``outputs/mlflow-model/`` written by AutoML's own run context."""
    import azureml.automl.core.inference as inference
    import mlflow
    from azureml.automl.core.shared import constants
    from azureml.automl.runtime._run_history.offline_automl_run.offline_automl_run import (
        OfflineAutoMLRun,
    )
    from azureml.automl.runtime._run_history.offline_automl_run.offline_automl_run_context import (
        OfflineAutoMLRunContext,
    )
    from azureml.automl.runtime.data_transformation import _get_data_snapshot, _get_output_snapshot

    inputs, outputs = _get_data_snapshot(train), _get_output_snapshot(y)
    v1, v2 = inference._get_scoring_file(
        is_pandas_data_frame=True,
        input_sample_str=inputs,
        output_sample_str=outputs,
        is_forecasting=False,
        task_type=task,
    )
    texts = {
        constants.SCORING_FILE_PATH: v1,
        constants.SCORING_FILE_V2_PATH: v2,
        constants.SCORING_FILE_PBI_V1_PATH: v2,
        constants.CONDA_ENV_FILE_PATH: inference._create_conda_env_file(),
    }
    # The same signature a run infers, from the same snapshots (AutoML evals its own literals).
    import numpy as np
    import pandas as pd

    scope = {"pd": pd, "np": np}
    signature = mlflow.models.signature.infer_signature(eval(inputs, scope), eval(outputs, scope))
    with tempfile.TemporaryDirectory() as tmp:
        run = OfflineAutoMLRun("automl_fixture_run", str(Path(tmp) / "run"))
        mlflow.set_tracking_uri((Path(tmp) / "mlruns").as_uri())
        with mlflow.start_run() as active:
            OfflineAutoMLRunContext(run).batch_save_artifacts(
                tmp,
                texts,
                {constants.MODEL_PATH: pipeline},
                True,
                {constants.MLFlowLiterals.SCHEMA_SIGNATURE: signature},
            )
            logged = Path(mlflow.get_artifact_uri().removeprefix("file://"))
        shutil.copytree(Path(tmp) / "run" / "outputs", dest / "outputs")
        shutil.copytree(logged / "outputs" / "mlflow-model", dest / "outputs" / "mlflow-model")
        (dest / "outputs" / "run_id.txt").write_text(active.info.run_id + "\n")
    with zipfile.ZipFile(dest / "automl_best_model.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ZIP_FILES:
            zf.write(dest / "outputs" / name, name)


def build_case(name: str, out: Path) -> dict[str, Any]:
    """Fit, write and score one case under ``out/name``."""
    import pandas as pd

    task, label, kind = CASES[name]
    data = make_data(seed=1)
    data = data.drop(columns=[c for c in ("churned", "segment", "spend") if c != label])
    data["plan"] = data["plan"].astype(str)  # AutoML reads text columns, not pandas categories
    y = data.pop(label).to_numpy()
    train, holdout = data.iloc[:300].reset_index(drop=True), data.iloc[300:].reset_index(drop=True)
    pipeline = build_pipeline(task, kind, train, y[:300])

    dest = out / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    write_outputs(pipeline, task, train, y[:300], dest)
    holdout.to_csv(dest / "holdout.csv", index=False)
    rows = pd.read_csv(dest / "holdout.csv")
    expected = pd.DataFrame({"predict": pipeline.predict(rows)})
    if task == "classification":
        proba = pipeline.predict_proba(rows)
        for i, cls in enumerate(pipeline.classes_):
            expected[f"proba_{cls}"] = proba[:, i]
    expected.to_parquet(dest / "expected.parquet", index=False)
    case = {
        "case": name,
        "task": task,
        "label": label,
        "model_class": f"{type(pipeline).__module__}.{type(pipeline).__name__}",
        "train_rows": len(train),
        "holdout_rows": len(rows),
        "expected_columns": list(expected.columns),
    }
    (dest / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    return case


def main() -> None:
    """Build every case (or the named ones) into ``sys.argv[1]``."""
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or list(CASES):
        case = build_case(name, out)
        print(f"{name}: {case['holdout_rows']} rows, {case['model_class']}")


if __name__ == "__main__":
    main()
