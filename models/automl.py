"""Azure ML AutoML outputs -> MLflow models.

Two layouts:

* ``mlflow-model/`` (newer runs): validated (MLmodel, python_function flavor, model file,
  requirements, the classes its pickle names are importable here) and kept as is.
* ``model.pkl`` + ``conda_env_v_*.yml`` + ``scoring_file_v_*.py`` ("download best model"
  zip, or the run's ``outputs/``): the scoring file is parsed with :mod:`ast` (never
  imported or executed) for the input sample (columns, dtypes, example row) and the output
  sample; the conda env gives the requirements (those installed here, pinned to the
  installed versions); ``model.pkl`` (loaded only with consent) becomes the sklearn flavor
  saved with skops. A model needing modules that are not installed
  (``azureml.automl.runtime``...) is refused with the list of missing modules.
"""

from __future__ import annotations

import ast
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.errors import ModelImportError, UntrustedPickleError
from lifecycle.base.tags import (
    AUTOML_DROPPED_REQUIREMENTS_TAG,
    AUTOML_MODEL_SHA_TAG,
    AUTOML_SCORING_FILE_TAG,
)
from models._unpickler import load_trusted_pickle, missing_modules, scan_pickle_globals
from models.archives import ArchiveLimits
from models.automl_env import needs_automl_runtime, save_automl_env_model
from models.common import (
    BuiltModel,
    copy_tree,
    installed_version,
    materialize_source,
    pinned_requirements,
    provenance_tags,
    quiet_infer_signature,
    quiet_mlflow_save,
    read_sample_csv,
    require_file,
    select_features,
    sha256_path,
    skops_trusted_types_for,
)

logger = logging.getLogger(__name__)

_NOT_REQUIREMENTS = {"python", "pip", "setuptools", "wheel"}


def find_automl_root(root: Path) -> tuple[Path, str]:
    """Where the AutoML files are, and the layout: ``mlflow_model`` or ``automl_outputs``.

    Raises:
        ModelImportError: neither layout is there.
    """
    candidates = [root, root / "outputs"]
    for c in candidates:
        if (c / "MLmodel").is_file():
            return c, "mlflow_model"
        if (c / "mlflow-model" / "MLmodel").is_file():
            return c / "mlflow-model", "mlflow_model"
    for c in candidates:
        if (c / "model.pkl").is_file() or list(c.glob("scoring_file_v_*.py")):
            return c, "automl_outputs"
    raise ModelImportError(
        f"'{root}' is not an AutoML output: expected an 'mlflow-model/' folder or "
        "model.pkl + conda_env_v_*.yml + scoring_file_v_*.py"
    )


def _newest(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise ModelImportError(f"AutoML output '{folder}' has no {what} ({pattern})")
    return found[-1]


# --------------------------------------------------------------- scoring file


def _assignments(tree: ast.AST) -> dict[str, ast.expr]:
    out: dict[str, ast.expr] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for tgt in node.targets:
                if isinstance(tgt, ast.Name):
                    out[tgt.id] = node.value
    return out


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _find_call(
    node: ast.AST | None, name: str, names: dict[str, ast.expr], depth: int = 0
) -> ast.Call | None:
    """The first call to ``name`` in ``node``, following variable names (no execution)."""
    if node is None or depth > 8:
        return None
    if isinstance(node, ast.Name):
        return _find_call(names.get(node.id), name, names, depth + 1)
    if isinstance(node, ast.Call):
        if _call_name(node) == name:
            return node
        for child in [*node.args, *(k.value for k in node.keywords)]:
            hit = _find_call(child, name, names, depth + 1)
            if hit is not None:
                return hit
    if isinstance(node, ast.Dict):
        for value in node.values:
            hit = _find_call(value, name, names, depth + 1)
            if hit is not None:
                return hit
    return None


def _literal(node: ast.AST, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ModelImportError(
            f"The scoring file's {what} is not a literal: {ast.dump(node)[:80]}"
        ) from exc


def parse_scoring_file(path: Path) -> tuple[Any, Any]:
    """The input sample (DataFrame) and output sample (ndarray or None) of a scoring file.

    Read with :mod:`ast` only. Understands ``input_sample = pd.DataFrame({...})`` (v1) and
    ``input_sample = StandardPythonParameterType({'data': PandasParameterType(pd.DataFrame(
    {...}))})`` (v2), each column a ``pd.Series([values], dtype="...")`` or a list.

    Raises:
        ModelImportError: not Python, or no input sample.
    """
    import numpy as np
    import pandas as pd

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=path.name)
    except SyntaxError as exc:
        raise ModelImportError(f"Scoring file '{path.name}' is not valid Python: {exc}") from exc
    names = _assignments(tree)
    frame = _find_call(names.get("input_sample"), "DataFrame", names) or _find_call(
        names.get("data_sample"), "DataFrame", names
    )
    if frame is None:
        raise ModelImportError(
            f"Scoring file '{path.name}' has no input sample (expected input_sample = "
            "pd.DataFrame({...}) or a PandasParameterType(pd.DataFrame({...})))"
        )
    data_node: ast.AST | None = frame.args[0] if frame.args else None
    for kw in frame.keywords:
        if kw.arg == "data":
            data_node = kw.value
    if not isinstance(data_node, ast.Dict) or not data_node.keys:
        raise ModelImportError(f"Scoring file '{path.name}': the input sample has no columns")
    columns: dict[str, Any] = {}
    for key, value in zip(data_node.keys, data_node.values, strict=True):
        if key is None:
            raise ModelImportError(
                f"Scoring file '{path.name}': the input sample uses ** in its columns"
            )
        col = str(_literal(key, "column name"))
        dtype = None
        values_node: ast.AST = value
        if isinstance(value, ast.Call) and _call_name(value) == "Series":
            values_node = value.args[0] if value.args else ast.List(elts=[], ctx=ast.Load())
            for kw in value.keywords:
                if kw.arg == "dtype":
                    dtype = str(_literal(kw.value, f"dtype of '{col}'"))
                elif kw.arg == "data":
                    values_node = kw.value
        values = _literal(values_node, f"values of '{col}'")
        if not isinstance(values, list):
            values = [values]
        try:
            if dtype and dtype.startswith("datetime64"):
                columns[col] = pd.to_datetime(pd.Series(values))
            else:
                columns[col] = pd.Series(values, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ModelImportError(
                f"Scoring file '{path.name}': column '{col}' values {values!r} do not fit dtype {dtype}"
            ) from exc
    input_df = pd.DataFrame(columns)
    output = None
    out_call = _find_call(names.get("output_sample"), "array", names) or _find_call(
        names.get("result_sample"), "array", names
    )
    if out_call is not None and out_call.args:
        output = np.array(_literal(out_call.args[0], "output sample"))
    return input_df, output


# ------------------------------------------------------------------ conda env


def conda_requirements(path: Path) -> tuple[list[str], list[str]]:
    """(kept, dropped) package names from an AutoML conda env.

    Kept are the packages installed here; dropped are the others (e.g. azureml-*).

    Raises:
        ModelImportError: not a conda env YAML.
    """
    try:
        env = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ModelImportError(f"'{path.name}' is not valid YAML: {exc}".splitlines()[0]) from exc
    deps = env.get("dependencies") if isinstance(env, dict) else None
    if not isinstance(deps, list):
        raise ModelImportError(f"'{path.name}' has no 'dependencies' list")
    specs: list[str] = []
    for dep in deps:
        if isinstance(dep, str):
            specs.append(dep)
        elif isinstance(dep, dict):
            specs.extend(str(p) for p in dep.get("pip") or [])
    kept: list[str] = []
    dropped: list[str] = []
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)", spec)
        if not match:
            continue
        name = match.group(1)
        if name.lower() in _NOT_REQUIREMENTS:
            continue
        if installed_version(name) is not None:
            kept.append(name)
        else:
            dropped.append(spec.strip())
    return kept, dropped


# ------------------------------------------------------------------- builders


def _missing_here(pkl: Path) -> list[str]:
    """Modules ``pkl`` names that are not installed here (read by opcode, nothing run)."""
    found = scan_pickle_globals(pkl)
    if found is None:
        logger.info("%s is not a plain pickle stream; module check deferred to loading", pkl.name)
        return []
    return missing_modules(found)


def _check_pickle_modules(pkl: Path) -> None:
    missing = _missing_here(pkl)
    if missing:
        raise ModelImportError(
            f"'{pkl.name}' needs modules that are not installed here: {', '.join(missing)}"
        )


def _import_mlflow_model(
    root: Path,
    source: Path,
    out: Path,
    sample: Path | None,
    target: str | None,
    trust_pickle: bool,
) -> BuiltModel:
    from mlflow.models import Model

    mlmodel = Model.load(str(root / "MLmodel"))
    pyfunc_conf = mlmodel.flavors.get("python_function")
    if pyfunc_conf is None:
        raise ModelImportError(
            f"AutoML MLflow model '{root}' has no python_function flavor "
            f"(flavors: {', '.join(mlmodel.flavors)})"
        )
    model_file = pyfunc_conf.get("model_path") or (mlmodel.flavors.get("sklearn") or {}).get(
        "pickled_model"
    )
    if model_file:
        model_path = root / str(model_file)
        if not model_path.exists():
            raise ModelImportError(
                f"AutoML MLflow model '{root}' lacks its model file '{model_file}'"
            )
    env_pkl = None
    if model_file and (root / str(model_file)).is_file():
        model_path = root / str(model_file)
        missing = _missing_here(model_path)
        if needs_automl_runtime(missing):
            env_pkl = model_path
        elif missing:
            _check_pickle_modules(model_path)
    if not any((root / f).is_file() for f in ("requirements.txt", "conda.yaml")):
        raise ModelImportError(
            f"AutoML MLflow model '{root}' has neither requirements.txt nor conda.yaml"
        )
    if mlmodel.signature is None:
        raise ModelImportError(f"AutoML MLflow model '{root}' has no signature in its MLmodel")
    x = y = None
    if sample is not None:
        x, y = read_sample_csv(sample, target)
        x = select_features(x, mlmodel.signature.inputs.input_names(), f"sample '{sample.name}'")
    sha = sha256_path(source)
    tags = provenance_tags("automl", "mlflow_model", source, sha)
    if env_pkl is not None:
        input_df = output = None
        scoring = sorted(root.parent.glob("scoring_file_v_*.py"))
        if scoring:
            input_df, output = parse_scoring_file(scoring[-1])
        save_automl_env_model(
            env_pkl,
            out,
            trust_pickle=trust_pickle,
            input_df=input_df,
            output=output,
            signature=None if input_df is not None else mlmodel.signature,
            metadata={"lifecycle_provenance": tags},
        )
        return BuiltModel(
            model_dir=out,
            kind="automl",
            fmt="mlflow_model",
            source_name=source.name,
            source_sha256=sha,
            tags=tags,
            params={"environment": "azureml-automl-runtime", "model_file": env_pkl.name},
            sample=x,
            labels=y,
            summary="AutoML mlflow-model (model.pkl kept), run in AutoML's own environment",
        )
    copy_tree(root, out)
    return BuiltModel(
        model_dir=out,
        kind="automl",
        fmt="mlflow_model",
        source_name=source.name,
        source_sha256=sha,
        tags=tags,
        params={"flavors": ",".join(sorted(mlmodel.flavors))},
        sample=x,
        labels=y,
        summary=f"AutoML mlflow-model folder (flavors {', '.join(sorted(mlmodel.flavors))}), kept as is",
    )


def _import_env_outputs(
    pkl: Path,
    root: Path,
    source: Path,
    out: Path,
    input_df: Any,
    output: Any,
    sample: Path | None,
    target: str | None,
    trust_pickle: bool,
) -> BuiltModel:
    """AutoML's ``outputs/`` (or its zip) with a model.pkl that needs AutoML's runtime."""
    sha = sha256_path(source)
    scoring = _newest(root, "scoring_file_v_*.py", "scoring file")
    tags = provenance_tags(
        "automl",
        "automl_outputs",
        source,
        sha,
        {AUTOML_MODEL_SHA_TAG: sha256_path(pkl), AUTOML_SCORING_FILE_TAG: scoring.name},
    )
    save_automl_env_model(
        pkl,
        out,
        trust_pickle=trust_pickle,
        input_df=input_df,
        output=output,
        metadata={"lifecycle_provenance": tags},
    )
    x = y = None
    if sample is not None:
        x, y = read_sample_csv(sample, target)
        x = select_features(x, list(input_df.columns), f"sample '{sample.name}'")
    return BuiltModel(
        model_dir=out,
        kind="automl",
        fmt="automl_outputs",
        source_name=source.name,
        source_sha256=sha,
        tags=tags,
        params={"environment": "azureml-automl-runtime", "scoring_file": scoring.name},
        sample=x,
        labels=y,
        summary=f"AutoML model.pkl with {scoring.name}, run in AutoML's own environment",
    )


def build_automl_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    trust_pickle: bool = False,
    archive_limits: ArchiveLimits | None = None,
    sample: str | Path | None = None,
    target: str | None = None,
) -> BuiltModel:
    """Build (or validate and copy) an MLflow model from AutoML outputs.

    Args:
        source: ``mlflow-model/``, the run's ``outputs/``, a folder holding either, or the
            "download best model" zip.
        out_dir: where to write the MLflow model (must not exist yet, or be empty).
        trust_pickle: consent to unpickle ``model.pkl``.
        sample, target: optional sample CSV (kept for monitoring; checked against the
            signature).

    Returns:
        The :class:`BuiltModel`.

    Raises:
        UntrustedPickleError: ``model.pkl`` without ``trust_pickle``.
        ModelImportError: missing files, a scoring file without samples, missing modules
            (listed), a schema disagreeing with the model's features.
    """
    import mlflow.sklearn

    source = Path(source)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ModelImportError(f"Output folder '{out}' is not empty")
    if out.exists():
        out.rmdir()
    sample_path = Path(sample) if sample is not None else None
    with tempfile.TemporaryDirectory(prefix="automl-import-") as tmp:
        root, layout = find_automl_root(materialize_source(source, Path(tmp), archive_limits))
        if layout == "mlflow_model":
            return _import_mlflow_model(root, source, out, sample_path, target, trust_pickle)
        pkl = require_file(root, "model.pkl", "AutoML output")
        conda = _newest(root, "conda_env_v_*.yml", "conda environment")
        scoring = _newest(root, "scoring_file_v_*.py", "scoring file")
        input_df, output = parse_scoring_file(scoring)
        kept, dropped = conda_requirements(conda)
        missing = _missing_here(pkl)  # reads opcodes only: no consent needed
        if needs_automl_runtime(missing):
            return _import_env_outputs(
                pkl, root, source, out, input_df, output, sample_path, target, trust_pickle
            )
        _check_pickle_modules(pkl)
        if not trust_pickle:
            raise UntrustedPickleError(
                f"Refusing to load AutoML '{pkl.name}': unpickling runs code from the file. "
                "Pass --trust-pickle (trust_pickle=True) if you trust its origin"
            )
        model = load_trusted_pickle(pkl)
        from sklearn.base import BaseEstimator

        if not isinstance(model, BaseEstimator) or not hasattr(model, "predict"):
            raise ModelImportError(
                f"AutoML '{pkl.name}' holds a {type(model).__name__}, not a scikit-learn model"
            )
        names = getattr(model, "feature_names_in_", None)
        if names is not None:
            model_cols = [str(n) for n in names]
            sample_cols = [str(c) for c in input_df.columns]
            if model_cols != sample_cols:
                missing = [c for c in model_cols if c not in sample_cols]
                extra = [c for c in sample_cols if c not in model_cols]
                raise ModelImportError(
                    f"Scoring file '{scoring.name}' disagrees with the model's features: "
                    f"missing {missing or 'none'}, extra {extra or 'none'}"
                    + ("" if missing or extra else " (order differs)")
                )
        signature = quiet_infer_signature(input_df, output if output is not None else None)
        x = y = None
        if sample_path is not None:
            x, y = read_sample_csv(sample_path, target)
            x = select_features(x, list(input_df.columns), f"sample '{sample_path.name}'")
        model_sha = sha256_path(pkl)
        sha = sha256_path(source)
        estimator = f"{type(model).__module__}.{type(model).__name__}"
        tags = provenance_tags(
            "automl",
            "automl_outputs",
            source,
            sha,
            {
                AUTOML_MODEL_SHA_TAG: model_sha,
                AUTOML_SCORING_FILE_TAG: scoring.name,
                AUTOML_DROPPED_REQUIREMENTS_TAG: ",".join(dropped),
            },
        )
        with quiet_mlflow_save():
            mlflow.sklearn.save_model(
                model,
                str(out),
                serialization_format="skops",
                skops_trusted_types=skops_trusted_types_for(model),
                signature=signature,
                input_example=input_df,
                pip_requirements=pinned_requirements(kept),
                metadata={"lifecycle_provenance": tags},
            )
        prov_dir = out.parent / f".{out.name}-provenance"
        if prov_dir.exists():
            shutil.rmtree(prov_dir)
        prov_dir.mkdir(parents=True)
        provenance_files = {}
        for f in (conda, scoring):
            shutil.copy2(f, prov_dir / f.name)
            provenance_files[f.name] = prov_dir / f.name
    if dropped:
        logger.info("AutoML requirements not installed here, left out: %s", ", ".join(dropped))
    return BuiltModel(
        model_dir=out,
        kind="automl",
        fmt="automl_outputs",
        source_name=source.name,
        source_sha256=sha,
        tags=tags,
        params={"estimator": estimator, "scoring_file": scoring.name},
        provenance_files=provenance_files,
        sample=x,
        labels=y,
        summary=f"AutoML model.pkl ({type(model).__name__}) with {scoring.name}",
    )
