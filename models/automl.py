"""Azure ML AutoML outputs -> MLflow models that run in AutoML's own environment.

A model trained by AutoML only unpickles where ``azureml-automl-runtime`` is installed,
which can never be the toolkit's environment; so nothing of it is run here. Layouts:

* the run's ``outputs/`` (``model.pkl``, ``scoring_file_v_*.py``, ``conda_env_v_*.yml``,
  ``mlflow-model/``) and ``outputs/mlflow-model/`` alone: the MLmodel gives the signature,
  the scoring file (when beside it) the input example;
* the "download best model" zip (``model.pkl`` + scoring and conda files): the scoring file
  is parsed with :mod:`ast` (never imported or executed) for the signature and example.

``model.pkl`` is scanned by opcode only (it must name AutoML's runtime; modules installed
nowhere are listed) and kept byte for byte in an MLflow model that
:mod:`models.automl_env` writes (loader, pinned environment, consent).
"""

from __future__ import annotations

import ast
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lifecycle.base.errors import ModelImportError
from lifecycle.base.tags import (
    AUTOML_MODEL_SHA_TAG,
    AUTOML_SCORING_FILE_TAG,
)
from models._unpickler import missing_modules, scan_pickle_globals
from models.archives import ArchiveLimits
from models.automl_env import needs_automl_runtime, save_automl_env_model
from models.common import (
    BuiltModel,
    materialize_source,
    provenance_tags,
    read_sample_csv,
    require_file,
    select_features,
    sha256_path,
)

logger = logging.getLogger(__name__)


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


# ------------------------------------------------------------------- builders


def _missing_here(pkl: Path) -> list[str]:
    """Modules ``pkl`` names that are not installed here (read by opcode, nothing run)."""
    found = scan_pickle_globals(pkl)
    if found is None:
        logger.info("%s is not a plain pickle stream; module check deferred to loading", pkl.name)
        return []
    return missing_modules(found)


def _require_automl_runtime(pkl: Path) -> None:
    """Refuse a ``model.pkl`` that is not a model of AutoML's runtime (read by opcode).

    Raises:
        ModelImportError: it needs modules that are installed nowhere the toolkit knows of
            (listed), or it names no class of AutoML's runtime.
    """
    found = scan_pickle_globals(pkl)
    if found is None:
        raise ModelImportError(
            f"'{pkl.name}' is not a plain pickle stream: its classes cannot be read without "
            "running it"
        )
    if any(needs_automl_runtime([module]) for module, _ in found):
        return
    _check_pickle_modules(pkl)
    raise ModelImportError(
        f"'{pkl.name}' does not name AutoML's runtime (azureml.automl..., "
        "azureml.training.tabular...): not a model trained by AutoML; a scikit-learn pickle "
        "imports with `lifecycle import notebook`"
    )


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
    limits: ArchiveLimits | None = None,
) -> BuiltModel:
    """``outputs/mlflow-model/`` (alone, or inside ``outputs/`` beside the scoring files)."""
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
    if not model_file or not (root / str(model_file)).is_file():
        raise ModelImportError(
            f"AutoML MLflow model '{root}' lacks its model file "
            f"'{model_file or '(none named in MLmodel)'}'"
        )
    pkl = root / str(model_file)
    _require_automl_runtime(pkl)
    if mlmodel.signature is None:
        raise ModelImportError(f"AutoML MLflow model '{root}' has no signature in its MLmodel")
    names = mlmodel.signature.inputs.input_names()
    input_df = output = None
    scoring = sorted(root.parent.glob("scoring_file_v_*.py"))
    if scoring:  # the run's outputs/: the scoring file gives the input example
        input_df, output = parse_scoring_file(scoring[-1])
        cols = [str(c) for c in input_df.columns]
        if cols != [str(n) for n in names]:
            missing = [c for c in names if c not in cols]
            extra = [c for c in cols if c not in names]
            raise ModelImportError(
                f"Scoring file '{scoring[-1].name}' disagrees with the model's features: "
                f"missing {missing or 'none'}, extra {extra or 'none'}"
                + ("" if missing or extra else " (order differs)")
            )
    x = y = None
    if sample is not None:
        x, y = read_sample_csv(sample, target)
        x = select_features(x, names, f"sample '{sample.name}'")
    sha = sha256_path(source, limits)
    tags = provenance_tags(
        "automl", "mlflow_model", source, sha, {AUTOML_MODEL_SHA_TAG: sha256_path(pkl)}
    )
    save_automl_env_model(
        pkl,
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
        params={"environment": "azureml-automl-runtime", "model_file": pkl.name},
        provenance_files=_provenance_copies(out, [root / "MLmodel", *scoring[-1:]]),
        sample=x,
        labels=y,
        summary="AutoML mlflow-model (model.pkl kept), run in AutoML's own environment",
    )


def _provenance_copies(out: Path, files: list[Path]) -> dict[str, Path]:
    """Copies of the origin's own files kept beside the model as provenance."""
    prov_dir = out.parent / f".{out.name}-provenance"
    if prov_dir.exists():
        shutil.rmtree(prov_dir)
    prov_dir.mkdir(parents=True)
    kept = {}
    for f in files:
        if f.is_file():
            shutil.copy2(f, prov_dir / f.name)
            kept[f.name] = prov_dir / f.name
    return kept


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
    limits: ArchiveLimits | None = None,
) -> BuiltModel:
    """AutoML's ``outputs/`` (or its zip) with a model.pkl that needs AutoML's runtime."""
    sha = sha256_path(source, limits)
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
    conda = sorted(root.glob("conda_env_v_*.yml"))
    return BuiltModel(
        model_dir=out,
        kind="automl",
        fmt="automl_outputs",
        source_name=source.name,
        source_sha256=sha,
        tags=tags,
        params={"environment": "azureml-automl-runtime", "scoring_file": scoring.name},
        provenance_files=_provenance_copies(out, [scoring, *conda[-1:]]),
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
            return _import_mlflow_model(
                root, source, out, sample_path, target, trust_pickle, archive_limits
            )
        pkl = require_file(root, "model.pkl", "AutoML output")
        scoring = _newest(root, "scoring_file_v_*.py", "scoring file")
        input_df, output = parse_scoring_file(scoring)
        _require_automl_runtime(pkl)  # reads opcodes only: no consent needed
        return _import_env_outputs(
            pkl,
            root,
            source,
            out,
            input_df,
            output,
            sample_path,
            target,
            trust_pickle,
            archive_limits,
        )
