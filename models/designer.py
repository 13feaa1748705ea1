"""Azure ML Designer ModelDirectory -> MLflow pyfunc model that scores exactly like Designer.

Reads ``_meta.yaml``, ``model_spec.yaml`` (``model_type: ILearnerDotNet``, as Train Model
writes it), the learner pickle (``data.ilearner``, only with the user's consent, through
:mod:`models._unpickler`), ``_schema.json``, ``_samples.json`` (missing numbers written as
``{"isNan": true}``, as Designer's serving encodes them) and ``conda_env.yaml``. The learner's state is turned into plain scikit-learn objects (saved
with skops) plus a JSON spec, scored by :mod:`models._designer_pyfunc` (copied into the
model as its code). No Designer class is pickled into the output. Encoders and learners
whose scoring cannot be reproduced exactly are refused by class name.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.errors import ModelImportError, UntrustedPickleError
from lifecycle.base.tags import DESIGNER_ESTIMATOR_TAG, DESIGNER_LEARNER_TAG, DESIGNER_TASK_TAG
from models import _designer_pyfunc as scoring
from models._unpickler import designer_path_of, load_designer_pickle
from models.archives import ArchiveLimits
from models.common import (
    BuiltModel,
    check_trusted_types,
    find_untrusted_skops_types,
    fresh_dir,
    materialize_source,
    pinned_requirements,
    provenance_tags,
    quiet_infer_signature,
    quiet_mlflow_save,
    require_file,
    sha256_path,
)

logger = logging.getLogger(__name__)

LEARNER_PREFIX = "azureml.studio.modules.ml.initialize_models."
NORMALIZER_PATH = "azureml.studio.modules.ml.common.normalizer.Normalizer"
_ENCODER_MODULE = "azureml.studio.modules.datatransform.common.named_encoder."
MINMAX_PATH = _ENCODER_MODULE + "NamedMinMaxEncoder"
ZSCORE_PATH = _ENCODER_MODULE + "NamedZScoreEncoder"
ONEHOT_PATH = _ENCODER_MODULE + "NamedOneHotEncoder"
LABEL_PATH = _ENCODER_MODULE + "NamedLabelEncoder"
#: Task of a learner, from the folder its class lives in.
TASK_BY_FOLDER = {
    "binary_classifier": "binary",
    "multi_classifier": "multiclass",
    "regressor": "regression",
}
#: _schema.json element type -> MLflow column type.
MLFLOW_TYPES = {
    "int64": "long",
    "int32": "long",
    "int16": "long",
    "int8": "long",
    "uint8": "long",
    "uint16": "long",
    "uint32": "long",
    "float64": "double",
    "float32": "float",
    "float": "double",
    "int": "long",
    "bool": "boolean",
    "str": "string",
    "object": "string",
    "string": "string",
    "category": "string",
}
_TYPES_BY_COLUMN_TYPE = {
    "Numeric": "double",
    "String": "string",
    "Categorical": "string",
    "Binary": "boolean",
}
#: model_spec.yaml ``model_type`` -> the learner pickle's default file name. Train Model
#: writes ``ILearnerDotNet`` with ``data.ilearner`` (a plain pickle of the learner); no other
#: layout is produced by a real Designer run.
MODEL_TYPES = {"ILearnerDotNet": "data.ilearner"}
DESIGNER_FILES = (
    "_meta.yaml",
    "model_spec.yaml",
    "_schema.json",
    "_samples.json",
    "conda_env.yaml",
    "score.py",
)


def find_model_directory(root: Path) -> Path:
    """The folder holding ``_meta.yaml``: ``root`` or its ``trained_model_outputs/``.

    Raises:
        ModelImportError: no ``_meta.yaml`` there.
    """
    for candidate in (root, root / "trained_model_outputs"):
        if (candidate / "_meta.yaml").is_file():
            return candidate
    raise ModelImportError(
        f"'{root}' is not a Designer ModelDirectory: no '_meta.yaml' "
        "(expected the 'trained_model_outputs' folder or a zip of it)"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ModelImportError(f"'{path.name}' is not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ModelImportError(f"'{path.name}' must be a YAML mapping, got {type(data).__name__}")
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelImportError(f"'{path.name}' is not valid JSON: {exc}") from exc


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The rows of ``_samples.json``: a list of records, or ``{"WebServiceInput0": [...]}``.

    Raises:
        ModelImportError: any other shape.
    """
    data = _read_json(path)
    rows = data
    if isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        if str(key).startswith("WebServiceInput"):
            rows = data[key]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        shape = type(data).__name__ + (
            f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else ""
        )
        raise ModelImportError(
            f"'{path.name}' must be a non-empty list of row records or "
            f'{{"WebServiceInput0": [records]}}; got a {shape}'
        )
    return [{k: _decode_nan(v) for k, v in row.items()} for row in rows]


def _decode_nan(value: Any) -> Any:
    """Designer's serving writes a missing number as ``{"isNan": true}`` (its ``encode_nan``)."""
    return float("nan") if value == {"isNan": True} else value


def read_schema(path: Path) -> dict[str, dict[str, Any]]:
    """``_schema.json``'s column attributes by column name.

    Raises:
        ModelImportError: no ``columnAttributes`` list.
    """
    data = _read_json(path)
    attrs = data.get("columnAttributes") if isinstance(data, dict) else None
    if not isinstance(attrs, list) or not all(isinstance(a, dict) and "name" in a for a in attrs):
        raise ModelImportError(f"'{path.name}' has no 'columnAttributes' list of named columns")
    return {str(a["name"]): a for a in attrs}


def mlflow_type(attr: dict[str, Any]) -> str:
    """The MLflow column type of one ``_schema.json`` column attribute.

    Raises:
        ModelImportError: a type this importer does not map (named).
    """
    element = attr.get("elementType") or {}
    type_name = str(element.get("typeName", "")).lower()
    if type_name in MLFLOW_TYPES:
        mtype = MLFLOW_TYPES[type_name]
        # A nullable integer column arrives as floats with NaN: declare it double.
        return "double" if mtype == "long" and element.get("isNullable") else mtype
    col_type = str(attr.get("type", ""))
    if not type_name and col_type in _TYPES_BY_COLUMN_TYPE:
        return _TYPES_BY_COLUMN_TYPE[col_type]
    raise ModelImportError(
        f"Column '{attr.get('name')}' has type {col_type or '?'}/{type_name or '?'} in "
        f"_schema.json; supported element types: {', '.join(sorted(MLFLOW_TYPES))}"
    )


def _refuse(what: str, path: str | None, why: str) -> ModelImportError:
    return ModelImportError(f"Cannot reproduce Designer {what} '{path}' exactly: {why}; refused")


def _sklearn_type(obj: Any) -> bool:
    return type(obj).__module__.split(".", 1)[0] == "sklearn"


def extract_scoring_state(learner: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn an unpickled Designer learner (stand-ins) into a scoring spec and sklearn state.

    Returns:
        (spec, state) for :mod:`models._designer_pyfunc`.

    Raises:
        ModelImportError: the learner, normaliser or an encoder cannot be reproduced exactly
            (named), or the learner is not trained.
    """
    path = designer_path_of(learner)
    if path is None or not path.startswith(LEARNER_PREFIX):
        raise ModelImportError(
            f"The learner pickle holds {path or type(learner).__name__}, not a Designer learner "
            f"(expected a class under {LEARNER_PREFIX})"
        )
    folder = path[len(LEARNER_PREFIX) :].split(".", 1)[0]
    task = TASK_BY_FOLDER.get(folder)
    if task is None:
        raise _refuse("learner", path, f"task '{folder}' is not one of {', '.join(TASK_BY_FOLDER)}")
    state_dict = learner.__dict__
    if not state_dict.get("_is_trained"):
        raise ModelImportError(f"Designer learner '{path}' is not trained (_is_trained is false)")
    estimator = state_dict.get("model")
    if not _sklearn_type(estimator):
        raise _refuse(
            "learner",
            path,
            f"its model is {type(estimator).__module__}.{type(estimator).__name__}, "
            "not a scikit-learn estimator",
        )
    if task != "regression" and not hasattr(estimator, "predict_proba"):
        raise _refuse(
            "learner",
            path,
            f"{type(estimator).__name__} has no predict_proba (Designer's decision_function "
            "path is not reproduced)",
        )
    if getattr(estimator, "verbose", 0):
        # Designer trains forests with verbose=1: joblib would print progress on every
        # prediction (on a server, for every request). Verbosity does not change predictions.
        estimator.set_params(verbose=0)
    features = state_dict.get("init_feature_columns_names")
    if not isinstance(features, list) or not features:
        raise ModelImportError(f"Designer learner '{path}' has no init_feature_columns_names")
    features = [str(f) for f in features]
    normalizer = state_dict.get("normalizer")
    npath = designer_path_of(normalizer)
    if npath != NORMALIZER_PATH:
        raise _refuse(
            "normaliser", npath or type(normalizer).__name__, f"expected {NORMALIZER_PATH}"
        )
    nstate = normalizer.__dict__
    numeric_encoders = nstate.get("numeric_feature_column_encoders") or {}
    str_encoders = nstate.get("str_feature_column_encoders") or {}

    numeric: list[dict[str, Any]] = []
    scalers: dict[str, Any] = {}
    for col, enc in numeric_encoders.items():
        entry: dict[str, Any] = {"column": str(col), "encoder": None}
        if enc is not None:
            epath = designer_path_of(enc)
            estate = enc.__dict__ if epath else {}
            std = estate.get("std")
            entry["std"] = None if std is None else float(std)
            entry["constant_column_option"] = bool(estate.get("constant_column_option", False))
            if epath == MINMAX_PATH:
                entry["encoder"] = "minmax"
                entry["unfitted"] = bool(estate.get("unfitted", False))
                scaler = estate.get("encoder")
                needs_fit = not entry["unfitted"] and (std is None or std >= 1e-9)
            elif epath == ZSCORE_PATH:
                entry["encoder"] = "zscore"
                scaler = estate.get("encoder")
                needs_fit = std is None or std >= 1e-9
            else:
                raise _refuse(
                    "encoder",
                    epath or type(enc).__name__,
                    f"numeric column '{col}' uses an encoder other than "
                    "NamedMinMaxEncoder / NamedZScoreEncoder",
                )
            if needs_fit:
                if std is None:
                    raise ModelImportError(f"Encoder of numeric column '{col}' was never fitted")
                if not _sklearn_type(scaler) or not hasattr(scaler, "n_features_in_"):
                    raise _refuse("encoder", epath, f"column '{col}' holds no fitted scaler")
                scalers[str(col)] = scaler
        numeric.append(entry)
    onehot: dict[str, Any] = {}
    strings: list[str] = []
    for col, enc in str_encoders.items():
        epath = designer_path_of(enc)
        if epath != ONEHOT_PATH:
            raise _refuse(
                "encoder",
                epath or type(enc).__name__,
                f"string column '{col}' is not one-hot encoded",
            )
        ohe = enc.__dict__.get("one_hot_encoder")
        if not _sklearn_type(ohe) or not hasattr(ohe, "categories_"):
            raise ModelImportError(f"One-hot encoder of string column '{col}' is not fitted")
        strings.append(str(col))
        onehot[str(col)] = ohe
    encoded = {e["column"] for e in numeric} | set(strings)
    stray = sorted(encoded - set(features))
    if stray:
        raise ModelImportError(
            f"Designer normaliser encodes column(s) that are not features: {', '.join(stray)}"
        )
    label_encoder = None
    label_column = state_dict.get("label_column_name")
    if task != "regression":
        label_encoders = nstate.get("label_column_encoders") or {}
        enc = label_encoders.get(label_column)
        epath = designer_path_of(enc)
        if epath != LABEL_PATH:
            raise _refuse("label encoder", epath or type(enc).__name__, f"expected {LABEL_PATH}")
        label_encoder = enc.__dict__.get("label_encoder")
        if not _sklearn_type(label_encoder) or not hasattr(label_encoder, "categories_"):
            raise ModelImportError(f"Label encoder of '{label_column}' is not fitted")
    spec = {
        "format": scoring.SPEC_FORMAT,
        "task": task,
        "learner_class": path,
        "estimator_class": f"{type(estimator).__module__}.{type(estimator).__name__}",
        "label_column": label_column,
        "features": features,
        "numeric": numeric,
        "strings": strings,
    }
    state = {
        "estimator": estimator,
        "label_encoder": label_encoder,
        "scalers": scalers,
        "onehot": onehot,
    }
    return spec, state


def _input_schema(
    features: list[str], schema: dict[str, dict[str, Any]], spec: dict[str, Any]
) -> Any:
    from mlflow.types import ColSpec, Schema

    missing = [f for f in features if f not in schema]
    if missing:
        raise ModelImportError(
            f"_schema.json disagrees with the model's features: it lacks {', '.join(missing)}"
        )
    numeric_cols = {e["column"] for e in spec["numeric"]}
    cols: list[Any] = []
    for f in features:
        mtype = mlflow_type(schema[f])
        if f in numeric_cols and mtype not in ("long", "double", "float", "boolean"):
            raise ModelImportError(
                f"_schema.json disagrees with the model's features: '{f}' is {mtype} in the "
                "schema but numeric in the model"
            )
        cols.append(ColSpec(mtype, f))
    return Schema(cols)


def _typed_example(rows: list[dict[str, Any]], input_schema: Any) -> Any:
    import pandas as pd

    df = pd.DataFrame.from_records(rows)
    names = input_schema.input_names()
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ModelImportError(
            f"_samples.json lacks the model's feature column(s): {', '.join(missing)}"
        )
    df = df[names].copy()
    for col in input_schema.inputs:
        kind = str(col.type)
        try:
            if "long" in kind:
                df[col.name] = df[col.name].astype("int64")
            elif "double" in kind:
                df[col.name] = df[col.name].astype("float64")
            elif "float" in kind:
                df[col.name] = df[col.name].astype("float32")
            elif "boolean" in kind:
                df[col.name] = df[col.name].astype(bool)
            elif "string" in kind:
                df[col.name] = df[col.name].astype(object)
        except (TypeError, ValueError) as exc:
            raise ModelImportError(
                f"_samples.json column '{col.name}' does not fit its schema type {kind}: {exc}"
            ) from exc
    return df


def build_designer_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    trust_pickle: bool = False,
    archive_limits: ArchiveLimits | None = None,
) -> BuiltModel:
    """Build an MLflow pyfunc model from a Designer ModelDirectory (folder or zip).

    Args:
        source: the ``trained_model_outputs`` folder, a folder holding it, or a zip of it.
        out_dir: where to write the MLflow model (must be empty or absent).
        trust_pickle: the user's consent to unpickle the learner (restricted unpickler).

    Returns:
        The :class:`BuiltModel` (sample = the ``_samples.json`` rows).

    Raises:
        UntrustedPickleError: ``trust_pickle`` is false.
        ModelImportError: a file is missing or malformed, a class is outside the allow
            list, the schema disagrees with the features, or scoring cannot be reproduced.
    """
    import mlflow.pyfunc
    import skops.io
    from mlflow.models import ModelSignature

    source = Path(source)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="designer-import-") as tmp:
        work = Path(tmp)
        root = find_model_directory(materialize_source(source, work, archive_limits))
        meta = _read_yaml(require_file(root, "_meta.yaml", "Designer ModelDirectory"))
        if str(meta.get("type", "ModelDirectory")) != "ModelDirectory":
            raise ModelImportError(
                f"_meta.yaml type is '{meta.get('type')}', expected ModelDirectory"
            )
        spec_name = str(meta.get("model") or "model_spec.yaml")
        model_spec = _read_yaml(require_file(root, spec_name, "Designer ModelDirectory"))
        model_type = str(model_spec.get("model_type", ""))
        if model_type not in MODEL_TYPES:
            raise ModelImportError(
                f"not implemented: {spec_name} with model_type "
                f"'{model_spec.get('model_type', model_spec.get('flavor', '?'))}' "
                "(Designer's Train Model writes 'ILearnerDotNet')"
            )
        data_name = str(model_spec.get("file_name") or MODEL_TYPES[model_type])
        data_path = require_file(root, data_name, "Designer ModelDirectory")
        schema_path = require_file(
            root, str(meta.get("schema") or "_schema.json"), "Designer ModelDirectory"
        )
        samples_path = require_file(
            root, str(meta.get("samples") or "_samples.json"), "Designer ModelDirectory"
        )
        schema = read_schema(schema_path)
        rows = read_samples(samples_path)
        if not trust_pickle:
            raise UntrustedPickleError(
                f"'{data_name}' is a pickle: unpickling runs code from the file. Pass "
                "--trust-pickle (trust_pickle=True) to consent; it is then read through a "
                "restricted unpickler that admits only Designer and scikit-learn classes"
            )
        learner = load_designer_pickle(data_path)
        spec, state = extract_scoring_state(learner)
        input_schema = _input_schema(spec["features"], schema, spec)
        example = _typed_example(rows, input_schema)

        state_path = work / "state.skops"
        skops.io.dump(state, str(state_path))
        trusted = sorted(find_untrusted_skops_types(file=state_path))
        check_trusted_types(trusted, "Designer learner state")
        spec["skops_trusted_types"] = trusted
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")

        # Score the example with the state read back from skops: proves the saved state is
        # complete and gives the output schema.
        loaded_spec, loaded_state = scoring.load_state(str(spec_path), str(state_path))
        try:
            predictions = scoring.score(example, loaded_spec, loaded_state)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelImportError(
                f"The Designer model cannot score its own _samples.json rows: {exc}".splitlines()[0]
            ) from exc
        signature = ModelSignature(
            inputs=input_schema, outputs=quiet_infer_signature(example, predictions).outputs
        )
        sha = sha256_path(source, archive_limits)
        tags = provenance_tags(
            "designer",
            "model_directory",
            source,
            sha,
            {
                DESIGNER_LEARNER_TAG: spec["learner_class"],
                DESIGNER_ESTIMATOR_TAG: spec["estimator_class"],
                DESIGNER_TASK_TAG: spec["task"],
            },
        )
        fresh_dir(out)
        out.rmdir()
        with quiet_mlflow_save():
            mlflow.pyfunc.save_model(
                path=str(out),
                python_model=str(Path(scoring.__file__)),
                artifacts={"spec": str(spec_path), "state": str(state_path)},
                signature=signature,
                input_example=example.head(5),
                pip_requirements=pinned_requirements(),
                metadata={"lifecycle_provenance": tags},
            )
        prov_dir = out.parent / f".{out.name}-provenance"
        if prov_dir.exists():
            shutil.rmtree(prov_dir)
        prov_dir.mkdir(parents=True)
        provenance_files: dict[str, Path] = {}
        for name in DESIGNER_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, prov_dir / name)
                provenance_files[name] = prov_dir / name
    params = {
        "designer.learner": spec["learner_class"].rsplit(".", 1)[-1],
        "designer.estimator": spec["estimator_class"],
        "designer.task": spec["task"],
        "designer.features": str(len(spec["features"])),
    }
    logger.info("built Designer model %s from %s", out, source)
    return BuiltModel(
        model_dir=out,
        kind="designer",
        fmt="model_directory",
        source_name=source.name,
        source_sha256=sha,
        tags=tags,
        params=params,
        provenance_files=provenance_files,
        sample=example,
        summary=(
            f"Designer {spec['task']} learner {spec['learner_class'].rsplit('.', 1)[-1]} "
            f"({spec['estimator_class'].rsplit('.', 1)[-1]}, {len(spec['features'])} features)"
        ),
    )
