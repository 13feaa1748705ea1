"""The notebook scenario's training script: what a data scientist's notebook does.

Trains a scikit-learn Pipeline on a data set that ships with scikit-learn, logs params,
metrics and the model to a workspace, and writes the artifacts a notebook leaves behind:
``model.joblib`` (the file users hand over), a training sample CSV and a labelled holdout
CSV (for gates and monitoring). Used by ``mlflow run . -e train`` and the demo.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lifecycle.base.errors import InvalidArgumentError
from lifecycle.base.workspaces import Workspace, get_or_create_experiment

logger = logging.getLogger(__name__)

DATASETS = ("breast_cancer", "wine", "diabetes")
ALGORITHMS = ("logreg", "forest")


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    dataset: str
    task: str
    algorithm: str
    run_id: str | None
    joblib_path: str
    sample_csv: str
    holdout_csv: str
    target: str
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return asdict(self)


def load_dataset(dataset: str) -> tuple[Any, Any, str]:
    """A scikit-learn data set as (features DataFrame with safe column names, labels, task)."""
    from sklearn import datasets

    loaders = {
        "breast_cancer": (datasets.load_breast_cancer, "classification"),
        "wine": (datasets.load_wine, "classification"),
        "diabetes": (datasets.load_diabetes, "regression"),
    }
    if dataset not in loaders:
        raise InvalidArgumentError(
            f"Unknown dataset '{dataset}'. Expected one of {', '.join(DATASETS)}"
        )
    loader, task = loaders[dataset]
    bunch = loader(as_frame=True)
    X = bunch.data.copy()
    X.columns = [str(c).replace(" ", "_").replace("(", "").replace(")", "") for c in X.columns]
    return X, bunch.target.rename("target"), task


def train(
    out_dir: str | Path,
    *,
    ws: Workspace | None = None,
    dataset: str = "breast_cancer",
    algorithm: str = "logreg",
    c: float = 1.0,
    n_estimators: int = 50,
    seed: int = 0,
    experiment: str = "notebook-training",
) -> TrainResult:
    """Train a model, write the notebook's artifacts to ``out_dir``, log the run to ``ws``.

    Args:
        out_dir: folder for model.joblib, sample.csv and holdout.csv.
        ws: workspace to log params, metrics and the model to (None: log nothing).
        dataset: one of breast_cancer, wine (classification), diabetes (regression).
        algorithm: logreg (linear model) or forest (random forest).
        c: inverse regularisation strength of the linear model.
        n_estimators: trees of the forest.
        seed: random seed of the split and the forest.
        experiment: experiment of the training run.

    Raises:
        InvalidArgumentError: unknown dataset or algorithm.
    """
    import joblib
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if algorithm not in ALGORITHMS:
        raise InvalidArgumentError(
            f"Unknown algorithm '{algorithm}'. Expected one of {', '.join(ALGORITHMS)}"
        )
    X, y, task = load_dataset(dataset)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
    if task == "classification":
        estimator: Any = (
            LogisticRegression(C=c, max_iter=2000)
            if algorithm == "logreg"
            else RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
        )
    else:
        estimator = (
            Ridge(alpha=1.0 / c)
            if algorithm == "logreg"
            else RandomForestRegressor(n_estimators=n_estimators, random_state=seed)
        )
    model = make_pipeline(StandardScaler(), estimator).fit(X_train, y_train)
    pred = model.predict(X_test)
    if task == "classification":
        metrics = {
            "accuracy": float(accuracy_score(y_test, pred)),
            "f1_macro": float(f1_score(y_test, pred, average="macro")),
        }
    else:
        metrics = {
            "rmse": float(mean_squared_error(y_test, pred) ** 0.5),
            "r2": float(r2_score(y_test, pred)),
        }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    joblib_path = out / "model.joblib"
    joblib.dump(model, joblib_path)
    sample_csv = out / "sample.csv"
    X_train.assign(target=y_train.values).to_csv(sample_csv, index=False)
    holdout_csv = out / "holdout.csv"
    X_test.assign(target=y_test.values).to_csv(holdout_csv, index=False)
    run_id = None
    if ws is not None:
        run_id = _log_training_run(
            ws, experiment, model, X_train, metrics, dataset, algorithm, c, n_estimators, seed
        )
    logger.info("trained %s on %s: %s", algorithm, dataset, metrics)
    return TrainResult(
        dataset=dataset,
        task=task,
        algorithm=algorithm,
        run_id=run_id,
        joblib_path=str(joblib_path),
        sample_csv=str(sample_csv),
        holdout_csv=str(holdout_csv),
        target="target",
        metrics=metrics,
    )


def _log_training_run(
    ws: Workspace,
    experiment: str,
    model: Any,
    X_train: Any,
    metrics: dict[str, float],
    dataset: str,
    algorithm: str,
    c: float,
    n_estimators: int,
    seed: int,
) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from lifecycle.base.workspaces import use_workspace
    from models.common import pinned_requirements, skops_trusted_types_for

    with use_workspace(ws):
        exp_id = get_or_create_experiment(ws, experiment)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{algorithm}-{dataset}") as run:
            mlflow.log_params(
                {
                    "dataset": dataset,
                    "algorithm": algorithm,
                    "C": c,
                    "n_estimators": n_estimators,
                    "seed": seed,
                }
            )
            mlflow.log_metrics(metrics)
            sample = X_train.head(5)
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(sample, model.predict(sample)),
                input_example=sample,
                pip_requirements=pinned_requirements(),
                serialization_format="skops",
                # A forest holds sklearn.tree._tree.Tree, which skops does not trust by
                # default: declare exactly the types this model holds (an allow-list).
                skops_trusted_types=skops_trusted_types_for(model),
            )
            return str(run.info.run_id)
