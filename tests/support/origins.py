"""Fixture builders: origin artifacts laid out the way Designer, AutoML and notebooks do.

Designer and AutoML pickles name their real classes (``azureml.studio...``,
``azureml.automl.runtime...``). Those packages cannot be installed, so the builders create
the classes in ``sys.modules`` only while they train and pickle (:func:`fake_modules`) and
remove them afterwards: the importer under test never sees them. The Designer classes here
are a small re-implementation of Designer's normaliser, encoders and learners (from its
public behaviour), used to train the model and to compute the origin's own predictions
that the imported model must reproduce.
"""

from __future__ import annotations

import contextlib
import enum
import json
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import scipy.sparse
import yaml

# ----------------------------------------------------------------------------- data


def mixed_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Numeric (float with NaN/inf, int, constant) and string (with missing) features."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype("int64"),
            "income": rng.normal(50_000, 15_000, n).round(2),
            "score": rng.normal(0, 1, n),
            "flat": np.full(n, 3.0),
            "color": rng.choice(["red", "green", "blue"], n).astype(object),
            "plan": rng.choice(["basic", "pro"], n).astype(object),
        }
    )
    df.loc[rng.choice(n, 8, replace=False), "income"] = np.nan
    df.loc[rng.choice(n, 2, replace=False), "score"] = np.inf
    df.loc[rng.choice(n, 6, replace=False), "color"] = None
    return df


def labels_for(df: pd.DataFrame, task: str, seed: int = 0) -> pd.Series:
    """A learnable target for ``df``: binary yes/no, multiclass cat/dog/bird, or a float."""
    rng = np.random.default_rng(seed + 1)
    signal = (
        (df["age"] - 50) / 15
        + np.nan_to_num(df["score"].clip(-3, 3))
        + (df["color"] == "red").astype(float)
    )
    signal = signal + rng.normal(0, 0.5, len(df))
    if task == "binary":
        return pd.Series(np.where(signal > 0, "yes", "no"), name="label", dtype=object)
    if task == "multiclass":
        return pd.Series(
            np.select([signal < -0.7, signal < 0.7], ["bird", "cat"], "dog"),
            name="label",
            dtype=object,
        )
    return pd.Series(signal * 10 + 100, name="label")


# ------------------------------------------------------------------- fake modules


@contextlib.contextmanager
def fake_modules(classes: dict[str, type]) -> Iterator[None]:
    """Make each ``module.path.ClassName`` -> class importable for the block, then remove it."""
    added: list[str] = []
    try:
        for full, cls in classes.items():
            module_name, cls_name = full.rsplit(".", 1)
            parts = module_name.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    added.append(name)
            cls.__module__ = module_name
            cls.__qualname__ = cls_name
            cls.__name__ = cls_name
            setattr(sys.modules[module_name], cls_name, cls)
        yield
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


# --------------------------------------------------------------- Designer classes

NAN_STR = "#NAN"


def _designer_classes() -> dict[str, type]:
    """Designer's encoder, normaliser and learner classes (behaviour per its public source)."""
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

    def inf2nan(series: pd.Series) -> pd.Series:
        return series.replace([np.inf, -np.inf], np.nan)

    class TaskType(enum.Enum):
        BinaryClassification = 1
        MultiClassification = 2
        Regression = 3

    class BaseLearnerSetting:
        def __init__(self, normalize_features: bool = True) -> None:
            self.normalize_features = normalize_features
            self.enable_log = False

    class NamedMinMaxEncoder:
        def __init__(self, column_name: str, constant_column_option: bool = False) -> None:
            self.column_name = column_name
            self.encoder = MinMaxScaler()
            self.constant_column_option = constant_column_option
            self.std = None
            self.unfitted = False

        def fit(self, series: pd.Series) -> None:
            if pd.api.types.is_integer_dtype(series):
                series = series.astype(np.float64)
            series = inf2nan(series)
            if series.isna().all():
                self.unfitted = True
                return
            self.std = np.nanstd(series)
            if self.std < 1e-9:
                return
            self.encoder.fit(series.values.reshape(-1, 1))

        def transform(self, series: pd.Series) -> np.ndarray:
            series = inf2nan(series)
            if pd.api.types.is_integer_dtype(series):
                series = series.astype(np.float64)
            values = np.array(series.values, dtype=float)
            if self.unfitted:
                return np.full_like(values, np.nan, dtype=float)
            if self.std < 1e-9:
                return values * 0.0 if self.constant_column_option else np.full_like(values, np.nan)
            return self.encoder.transform(values.reshape(-1, 1)).reshape(-1)

    class NamedZScoreEncoder:
        def __init__(self, column_name: str, constant_column_option: bool = False) -> None:
            self.column_name = column_name
            self.encoder = StandardScaler()
            self.constant_column_option = constant_column_option
            self.std = None

        def fit(self, series: pd.Series) -> None:
            if pd.api.types.is_integer_dtype(series):
                series = series.astype(np.float64)
            series = inf2nan(series)
            self.std = np.nanstd(series)
            if self.std < 1e-9:
                return
            self.encoder.fit(series.values.reshape(-1, 1))

        def transform(self, series: pd.Series) -> np.ndarray:
            if pd.api.types.is_integer_dtype(series):
                series = series.astype(np.float64)
            if self.std < 1e-9:
                return (
                    series.values * 0.0 if self.constant_column_option else series.values * np.nan
                )
            series = inf2nan(series)
            return self.encoder.transform(series.values.reshape(-1, 1)).reshape(-1)

    class NamedLogNormalEncoder:  # fitted state only; the importer must refuse it by name
        def __init__(self, column_name: str, constant_column_option: bool = False) -> None:
            self.column_name = column_name
            self.std = 1.0
            self.constant_column_option = constant_column_option
            self.invalid = False

        def fit(self, series: pd.Series) -> None:
            self.std = float(np.nanstd(series))

        def transform(self, series: pd.Series) -> np.ndarray:
            return np.log1p(
                np.abs(np.nan_to_num(np.asarray(series.values, dtype=float), posinf=0, neginf=0))
            )

    class NamedOneHotEncoder:
        def __init__(self, column_name: str) -> None:
            self.column_name = column_name
            self.one_hot_encoder = OneHotEncoder(sparse_output=True, handle_unknown="ignore")

        @staticmethod
        def _strings(series: pd.Series) -> np.ndarray:
            values = series.astype(object).where(series.notna(), NAN_STR)
            return np.array([str(v) for v in values], dtype=object).reshape(-1, 1)

        def fit(self, series: pd.Series) -> None:
            self.one_hot_encoder.fit(self._strings(series))

        def transform(self, series: pd.Series) -> Any:
            return self.one_hot_encoder.transform(self._strings(series))

    class NamedLabelEncoder:
        def __init__(self, column_name: str) -> None:
            self.column_name = column_name
            self.label_encoder = OrdinalEncoder()

        def fit(self, series: pd.Series) -> None:
            self.label_encoder.fit(series.values.reshape(-1, 1))

        def transform(self, series: pd.Series) -> np.ndarray:
            return self.label_encoder.transform(series.values.reshape(-1, 1)).reshape(-1)

        def inverse_transform(self, array: np.ndarray) -> np.ndarray:
            return self.label_encoder.inverse_transform(array.reshape(-1, 1)).reshape(-1)

        @property
        def label_mapping(self) -> np.ndarray:
            return self.label_encoder.categories_[0]

    class Normalizer:
        def __init__(self) -> None:
            self.label_column_encoders: dict[str, Any] = {}
            self.str_feature_column_encoders: dict[str, Any] = {}
            self.numeric_feature_column_encoders: dict[str, Any] = {}
            self.label_column_name = None

        def build(
            self, df: pd.DataFrame, features: list[str], label: str | None, numeric_encoder: Any
        ) -> None:
            if label is not None:
                self.label_column_name = label
                self.label_column_encoders[label] = NamedLabelEncoder(label)
            for col in features:
                if pd.api.types.is_numeric_dtype(df[col]):
                    self.numeric_feature_column_encoders[col] = numeric_encoder(col)
                else:
                    self.str_feature_column_encoders[col] = NamedOneHotEncoder(col)

        def fit(self, df: pd.DataFrame) -> None:
            for col, enc in self.label_column_encoders.items():
                enc.fit(df[col])
            for col, enc in self.str_feature_column_encoders.items():
                enc.fit(df[col])
            for col, enc in self.numeric_feature_column_encoders.items():
                if enc is not None:
                    enc.fit(df[col])

        def transform(self, df: pd.DataFrame) -> Any:
            str_features = [
                enc.transform(df[c]) for c, enc in self.str_feature_column_encoders.items()
            ]
            num = np.zeros((len(df), len(self.numeric_feature_column_encoders)))
            for j, (col, enc) in enumerate(self.numeric_feature_column_encoders.items()):
                ret = enc.transform(df[col]) if enc is not None else df[col].values
                num[:, j] = np.nan_to_num(ret)
            parts: list[Any] = []
            if str_features:
                parts.append(scipy.sparse.hstack(str_features, format="csr"))
            if num.size != 0:
                parts.append(scipy.sparse.csr_matrix(num) if str_features else num)
            if len(parts) == 1:
                return parts[0]
            parts.reverse()
            return scipy.sparse.hstack(parts, format="csr")

        def inverse_transform(self, array: np.ndarray, label_column: str) -> np.ndarray:
            return self.label_column_encoders[label_column].inverse_transform(array)

    class BaseLearner:
        task = "binary"

        def __init__(self, estimator: Any, setting: Any, task_type: Any) -> None:
            self.model = estimator
            self._is_trained = False
            self.init_feature_columns_names: list[str] | None = None
            self.label_column_name: str | None = None
            self.normalized_feature_columns_names = None
            self.normalizer: Any = None
            self.task_type = task_type
            self.setting = setting
            self._deployment_handler = None

        def train(self, df: pd.DataFrame, label: str, numeric_encoder: Any) -> None:
            self.label_column_name = label
            self.init_feature_columns_names = [c for c in df.columns if c != label]
            self.normalizer = Normalizer()
            label_to_encode = label if self.task != "regression" else None
            self.normalizer.build(
                df, self.init_feature_columns_names, label_to_encode, numeric_encoder
            )
            self.normalizer.fit(df)
            x = self.normalizer.transform(df[self.init_feature_columns_names])
            y = (
                self.normalizer.label_column_encoders[label].transform(df[label])
                if label_to_encode
                else df[label].values
            )
            self.model.fit(x, y)
            self._is_trained = True

        def predict(self, df: pd.DataFrame) -> pd.DataFrame:
            x = self.normalizer.transform(df[self.init_feature_columns_names])
            if self.task == "regression":
                return pd.DataFrame({"Scored Labels": self.model.predict(x)})
            prob = self.model.predict_proba(x)
            label = prob.argmax(axis=1)
            labels = self.normalizer.inverse_transform(label, self.label_column_name)
            if self.task == "binary":
                prob = prob[:, self.model.classes_.size - 1]
                return pd.DataFrame({"Scored Labels": labels, "Scored Probabilities": prob})
            mapping = self.normalizer.label_column_encoders[self.label_column_name].label_mapping
            out = pd.DataFrame(prob, columns=[f"Scored Probabilities_{m}" for m in mapping])
            out["Scored Labels"] = labels
            return out

    class LogisticRegressionBiClassifier(BaseLearner):
        task = "binary"

    class DecisionForestMultiClassifier(BaseLearner):
        task = "multiclass"

    class OrdinaryLeastSquaresRegressor(BaseLearner):
        task = "regression"

    class TwoClassSupportVectorMachineBiClassifier(BaseLearner):
        task = "binary"

    root = "azureml.studio.modules"
    enc = f"{root}.datatransform.common.named_encoder"
    models = f"{root}.ml.initialize_models"
    return {
        f"{root}.ml.common.ml_utils.TaskType": TaskType,
        f"{root}.ml.common.base_learner_setting.BaseLearnerSetting": BaseLearnerSetting,
        f"{enc}.NamedMinMaxEncoder": NamedMinMaxEncoder,
        f"{enc}.NamedZScoreEncoder": NamedZScoreEncoder,
        f"{enc}.NamedLogNormalEncoder": NamedLogNormalEncoder,
        f"{enc}.NamedOneHotEncoder": NamedOneHotEncoder,
        f"{enc}.NamedLabelEncoder": NamedLabelEncoder,
        f"{root}.ml.common.normalizer.Normalizer": Normalizer,
        f"{root}.ml.common.base_learner.BaseLearner": BaseLearner,
        f"{models}.binary_classifier.logistic_regression_biclassifier."
        "logistic_regression_biclassifier.LogisticRegressionBiClassifier": LogisticRegressionBiClassifier,
        f"{models}.multi_classifier.decision_forest_multiclassifier."
        "decision_forest_multiclassifier.DecisionForestMultiClassifier": DecisionForestMultiClassifier,
        f"{models}.regressor.linear_regressor.linear_regressor."
        "OrdinaryLeastSquaresRegressor": OrdinaryLeastSquaresRegressor,
        f"{models}.binary_classifier.two_class_support_vector_machine."
        "two_class_support_vector_machine.TwoClassSupportVectorMachineBiClassifier": (
            TwoClassSupportVectorMachineBiClassifier
        ),
    }


_SCHEMA_TYPES = {
    "int64": ("Numeric", "int64"),
    "float64": ("Numeric", "float64"),
    "object": ("String", "str"),
    "bool": ("Binary", "bool"),
}


def designer_schema(df: pd.DataFrame, label: str | None) -> dict[str, Any]:
    """``_schema.json`` for ``df`` (as Designer writes it for a dataset)."""
    attrs = []
    for col in df.columns:
        col_type, type_name = _SCHEMA_TYPES[
            str(df[col].dtype) if str(df[col].dtype) in _SCHEMA_TYPES else "object"
        ]
        attrs.append(
            {
                "name": col,
                "type": col_type,
                "isFeature": col != label,
                "elementType": {"typeName": type_name, "isNullable": bool(df[col].isna().any())},
            }
        )
    return {
        "columnAttributes": attrs,
        "featureChannels": [],
        "labelColumns": {label: ["label"]} if label else {},
        "scoreColumns": {},
    }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dict(orient="records"):
        out.append(
            {
                k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in row.items()
            }
        )
    return json.loads(json.dumps(out, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


@dataclass
class DesignerOrigin:
    """A built Designer ModelDirectory and the origin's own predictions on held-out rows."""

    path: Path
    holdout: pd.DataFrame
    expected: pd.DataFrame
    task: str


LEARNERS = {
    "binary": "LogisticRegressionBiClassifier",
    "multiclass": "DecisionForestMultiClassifier",
    "regression": "OrdinaryLeastSquaresRegressor",
}


def build_designer(
    root: Path,
    task: str = "binary",
    *,
    numeric_encoder: str = "minmax",
    constant_column_option: bool = False,
    samples_wrapper: bool = False,
    as_zip: bool = False,
    learner: str | None = None,
    estimator: Any = None,
    seed: int = 0,
    edge_cases: bool = False,
) -> DesignerOrigin:
    """Train a Designer learner and write ``trained_model_outputs/`` under ``root``.

    Args:
        task: binary, multiclass or regression.
        numeric_encoder: minmax, zscore, lognormal or none (normalize_features off).
        samples_wrapper: write ``_samples.json`` as ``{"WebServiceInput0": [...]}``.
        as_zip: also zip the folder; ``path`` is then the zip.
        learner: class name override (e.g. the SVM learner, to test refusals).
        edge_cases: add a training column that is entirely missing (an unfitted encoder)
            and held-out rows with +-inf, NaN and a category never seen in training.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression

    classes = _designer_classes()
    df = mixed_frame(seed=seed)
    if numeric_encoder == "none":
        # Raw values reach the estimator: keep them finite so the fit is meaningful.
        df["score"] = df["score"].replace([np.inf], 5.0)
    df["label"] = labels_for(df, task, seed)
    if edge_cases:
        df.insert(4, "blank", np.nan)
    train, holdout = df.iloc[:180].reset_index(drop=True), df.iloc[180:].reset_index(drop=True)
    if edge_cases:
        holdout.loc[0:3, "income"] = [np.inf, -np.inf, np.nan, 1e12]
        holdout.loc[0:3, "score"] = [-np.inf, np.nan, np.inf, -50.0]
        holdout.loc[0:3, "blank"] = [1.0, np.inf, 7.0, np.nan]
        holdout.loc[0:3, "color"] = ["purple", None, "red", "purple"]
    holdout_x = holdout.drop(columns=["label"])
    learner_name = learner or LEARNERS[task]
    if estimator is None:
        estimator = {
            "binary": LogisticRegression(max_iter=1000),
            "multiclass": RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0),
            "regression": LinearRegression(),
        }[task]
    by_name = {k.rsplit(".", 1)[1]: v for k, v in classes.items()}
    enc_cls = {
        "minmax": by_name["NamedMinMaxEncoder"],
        "zscore": by_name["NamedZScoreEncoder"],
        "lognormal": by_name["NamedLogNormalEncoder"],
    }.get(numeric_encoder)

    def make_encoder(col: str) -> Any:
        if enc_cls is None:
            return None
        return enc_cls(col, constant_column_option=constant_column_option)

    task_type = by_name["TaskType"]
    folder = root / "trained_model_outputs"
    folder.mkdir(parents=True)
    with fake_modules(classes):
        lrn = by_name[learner_name](estimator, by_name["BaseLearnerSetting"](), task_type(1))
        lrn.train(train, "label", make_encoder)
        # Designer scores learners without predict_proba through decision_function, which the
        # importer refuses: no expected output for those.
        scorable = task == "regression" or hasattr(estimator, "predict_proba")
        expected = lrn.predict(holdout_x) if scorable else pd.DataFrame()
        with open(folder / "_data.pkl", "wb") as fh:
            pickle.dump(lrn, fh, protocol=4)
    (folder / "_meta.yaml").write_text(
        yaml.safe_dump(
            {
                "type": "ModelDirectory",
                "model": "model_spec.yaml",
                "schema": "_schema.json",
                "samples": "_samples.json",
                "registerModel": True,
                "modelOutputPath": "trained_model_outputs",
            }
        )
    )
    (folder / "model_spec.yaml").write_text("model_type: pickle\nfile_name: _data.pkl\n")
    (folder / "_schema.json").write_text(json.dumps(designer_schema(train, "label")))
    records = _records(holdout.head(5))
    samples: Any = {"WebServiceInput0": records} if samples_wrapper else records
    (folder / "_samples.json").write_text(json.dumps(samples))
    (folder / "conda_env.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "project_environment",
                "channels": ["defaults"],
                "dependencies": [
                    "python=3.6.8",
                    {"pip": ["azureml-designer-classic-modules==0.0.176", "azureml-defaults"]},
                ],
            }
        )
    )
    (folder / "score.py").write_text(
        "from azureml.studio.core.io.model_directory import ModelDirectory\n"
        "def init():\n    global model\n    model = ModelDirectory.load('trained_model_outputs')\n"
    )
    path: Path = folder
    if as_zip:
        path = root / "trained_model_outputs.zip"
        zip_folder(folder, path, prefix="trained_model_outputs")
    return DesignerOrigin(path=path, holdout=holdout_x, expected=expected, task=task)


def zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip ``folder``'s files, under ``prefix/`` inside the archive."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                arc = item.relative_to(folder).as_posix()
                zf.write(item, f"{prefix}/{arc}" if prefix else arc)
    return zip_path


# ---------------------------------------------------------------------- notebook


def notebook_pipeline(df: pd.DataFrame, y: pd.Series) -> Any:
    """Pipeline(ColumnTransformer(numeric: impute+scale, categorical: impute+one-hot), LogReg)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = ["age", "income", "score"]
    categorical = ["color", "plan"]
    pre = ColumnTransformer(
        [
            ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))]).fit(df, y)


@dataclass
class NotebookOrigin:
    """A saved notebook model, its sample CSV, held-out rows and the model's predictions."""

    path: Path
    sample_csv: Path
    holdout: pd.DataFrame
    expected: np.ndarray
    model: Any


def notebook_data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Mixed features (inf replaced: a notebook pipeline would choke on it) and binary labels."""
    df = mixed_frame(seed=seed).drop(columns=["flat"])
    df["score"] = df["score"].replace([np.inf], 5.0)
    return df, labels_for(df, "binary", seed)


def build_notebook(root: Path, fmt: str, seed: int = 0) -> NotebookOrigin:
    """Save a fitted ColumnTransformer pipeline as ``fmt``: joblib, pickle, skops or mlflow."""
    df, y = notebook_data(seed)
    train, holdout = df.iloc[:180], df.iloc[180:].reset_index(drop=True)
    model = notebook_pipeline(train, y.iloc[:180])
    root.mkdir(parents=True, exist_ok=True)
    sample_csv = root / "train.csv"
    train.assign(target=y.iloc[:180].values).to_csv(sample_csv, index=False)
    if fmt == "joblib":
        path = root / "model.joblib"
        joblib.dump(model, path)
    elif fmt == "pickle":
        path = root / "model.pkl"
        path.write_bytes(pickle.dumps(model))
    elif fmt == "skops":
        import skops.io

        path = root / "model.skops"
        skops.io.dump(model, str(path))
    elif fmt == "mlflow":
        import mlflow.sklearn
        from mlflow.models import infer_signature

        path = root / "mlflow_model"
        mlflow.sklearn.save_model(
            model,
            str(path),
            signature=infer_signature(train, model.predict(train)),
            input_example=train.head(3),
            pip_requirements=["scikit-learn", "pandas"],
            serialization_format="skops",
            skops_trusted_types=sorted(_skops_untrusted(model)),
        )
    else:
        raise ValueError(fmt)
    return NotebookOrigin(path, sample_csv, holdout, model.predict(holdout), model)


def _skops_untrusted(model: Any) -> list[str]:
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


# ------------------------------------------------------------------------ AutoML

_AUTOML_CONDA = {
    "name": "project_environment",
    "dependencies": [
        "python=3.9.16",
        {
            "pip": [
                "azureml-train-automl-runtime==1.51.0",
                "inference-schema",
                "azureml-interpret==1.51.0",
                "azureml-defaults==1.51.0",
            ]
        },
        "numpy==1.23.5",
        "pandas==1.5.3",
        "scikit-learn==1.9.1",
        "py-xgboost==1.3.3",
    ],
}


def _series_literal(dtype: str) -> str:
    value = {"int64": "0", "float64": "0.0", "bool": "False"}.get(dtype, '"example_value"')
    return f'pd.Series([{value}], dtype="{dtype}")'


def automl_scoring_file(df: pd.DataFrame, output_literal: str, version: int = 1) -> str:
    """A ``scoring_file_v_<version>_0_0.py`` like AutoML writes for ``df``'s columns."""
    columns = ", ".join(f'"{c}": {_series_literal(str(df[c].dtype))}' for c in df.columns)
    frame = f"pd.DataFrame({{{columns}}})"
    header = (
        "import json\nimport logging\nimport os\nimport pickle\nimport numpy as np\n"
        "import pandas as pd\nimport joblib\n\nimport azureml.automl.core\n"
        "from azureml.automl.core.shared import logging_utilities, log_server\n"
        "from inference_schema.schema_decorators import input_schema, output_schema\n"
        "from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType\n"
        "from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType\n"
        "from inference_schema.parameter_types.standard_py_parameter_type import "
        "StandardPythonParameterType\n\n"
    )
    if version == 1:
        body = f"input_sample = {frame}\noutput_sample = np.array([{output_literal}])\n"
    else:
        body = (
            f"data_sample = PandasParameterType({frame})\n"
            "input_sample = StandardPythonParameterType({'data': data_sample})\n"
            f"result_sample = NumpyParameterType(np.array([{output_literal}]))\n"
            "output_sample = StandardPythonParameterType({'Results':result_sample})\n"
        )
    tail = (
        "\n\ndef init():\n    global model\n"
        "    model_path = os.path.join(os.getenv('AZUREML_MODEL_DIR'), 'model.pkl')\n"
        "    model = joblib.load(model_path)\n\n\n"
        'def run(data):\n    result = model.predict(data)\n    return json.dumps({"result": result.tolist()})\n'
    )
    return header + body + tail


@dataclass
class AutomlOrigin:
    """AutoML output files and the model's predictions on held-out rows."""

    path: Path
    holdout: pd.DataFrame
    expected: np.ndarray


def build_automl_outputs(
    root: Path,
    *,
    version: int = 1,
    as_zip: bool = False,
    seed: int = 0,
    runtime_classes: bool = False,
) -> AutomlOrigin:
    """``outputs/`` with ``model.pkl``, ``conda_env_v_1_0_0.yml``, ``scoring_file_v_*.py``.

    Args:
        runtime_classes: wrap the pipeline in classes from ``azureml.automl.runtime`` (as a
            real AutoML model is); the importer must then refuse it (not installable).
    """
    df, y = notebook_data(seed)
    train, holdout = df.iloc[:180], df.iloc[180:].reset_index(drop=True)
    model = notebook_pipeline(train, y.iloc[:180])
    out = root / "outputs"
    out.mkdir(parents=True)
    if runtime_classes:
        wrapped, fake = _runtime_wrapped(model)
        with fake_modules(fake):
            joblib.dump(wrapped, out / "model.pkl")
    else:
        joblib.dump(model, out / "model.pkl")
    (out / "conda_env_v_1_0_0.yml").write_text(yaml.safe_dump(_AUTOML_CONDA))
    (out / f"scoring_file_v_{version}_0_0.py").write_text(
        automl_scoring_file(train, '"example_value"', version)
    )
    path: Path = out
    if as_zip:
        path = zip_folder(out, root / "automl_best_model.zip")
    return AutomlOrigin(path, holdout, model.predict(holdout))


def _runtime_wrapped(model: Any) -> tuple[Any, dict[str, type]]:
    """``model`` inside a Pipeline of ``azureml.automl.runtime`` classes (made up here)."""
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.pipeline import Pipeline

    class DataTransformer(TransformerMixin, BaseEstimator):
        def fit(self, x: Any, y: Any = None) -> Any:
            return self

        def transform(self, x: Any) -> Any:
            return x

    class PreFittedSoftVotingClassifier(BaseEstimator):
        def __init__(self, estimators: Any = None) -> None:
            self.estimators = estimators

        def predict(self, x: Any) -> Any:
            return self.estimators[0].predict(x)

    fake = {
        "azureml.automl.runtime.featurization.data_transformer.DataTransformer": DataTransformer,
        "azureml.automl.runtime.shared.model_wrappers.PreFittedSoftVotingClassifier": (
            PreFittedSoftVotingClassifier
        ),
    }
    wrapped = Pipeline(
        [
            ("datatransformer", DataTransformer()),
            ("prefittedsoftvotingclassifier", PreFittedSoftVotingClassifier([model])),
        ]
    )
    return wrapped, fake


def build_automl_mlflow_model(
    root: Path, seed: int = 0, *, runtime_classes: bool = False
) -> AutomlOrigin:
    """``outputs/mlflow-model/`` as newer AutoML runs write it (sklearn flavor, pickle).

    Args:
        runtime_classes: pickle a pipeline of ``azureml.automl.runtime`` classes (refused).
    """
    import mlflow.sklearn
    from mlflow.models import infer_signature

    df, y = notebook_data(seed)
    train, holdout = df.iloc[:180], df.iloc[180:].reset_index(drop=True)
    model = notebook_pipeline(train, y.iloc[:180])
    path = root / "outputs" / "mlflow-model"
    path.parent.mkdir(parents=True)
    signature = infer_signature(train, model.predict(train))
    to_save, fake = _runtime_wrapped(model) if runtime_classes else (model, {})
    with fake_modules(fake):
        mlflow.sklearn.save_model(
            to_save,
            str(path),
            signature=signature,
            input_example=train.head(3),
            pip_requirements=["scikit-learn", "pandas"],
            serialization_format="pickle",
        )
    return AutomlOrigin(path, holdout, model.predict(holdout))
