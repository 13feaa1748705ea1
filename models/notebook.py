"""Notebook models -> MLflow sklearn models saved with skops.

Accepted: a joblib or pickle file holding a fitted scikit-learn estimator or Pipeline
(loaded only with the user's consent), a skops file (only scikit-learn/NumPy/SciPy/pandas
types), or an MLflow model directory (validated and copied as is). The signature is
inferred from a sample CSV with the target column left out.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from lifecycle.base.consent import unpickling_reason
from lifecycle.base.errors import ModelImportError, UntrustedPickleError
from lifecycle.base.loader import load_pyfunc
from lifecycle.base.tags import ESTIMATOR_TAG
from models._unpickler import load_trusted_pickle
from models.archives import ArchiveLimits
from models.common import (
    BuiltModel,
    check_trusted_types,
    copy_tree,
    find_untrusted_skops_types,
    materialize_source,
    pinned_requirements,
    provenance_tags,
    quiet_infer_signature,
    quiet_mlflow_save,
    read_sample_csv,
    select_features,
    sha256_path,
    skops_trusted_types_for,
)

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "joblib", ".jbl": "joblib"}


def notebook_format(path: Path) -> str:
    """The notebook format of ``path``: ``mlflow``, ``skops``, ``joblib`` or ``pickle``.

    Raises:
        ModelImportError: the path is missing or not one of those.
    """
    import zipfile

    if not path.exists():
        raise ModelImportError(f"Model file '{path}' does not exist")
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return "mlflow"
        raise ModelImportError(
            f"Folder '{path}' is not an MLflow model directory (no MLmodel file)"
        )
    if path.suffix.lower() == ".skops":
        return "skops"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if "schema.json" in zf.namelist():
                return "skops"
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return PICKLE_SUFFIXES[path.suffix.lower()]
    head = path.read_bytes()[:2]
    if head[:1] == b"\x80" or head in (b"x\x9c", b"x\x01", b"x\xda"):
        return "joblib" if head[:1] != b"\x80" else "pickle"
    raise ModelImportError(
        f"'{path.name}' is not a model file this importer reads "
        "(expected .joblib/.pkl/.pickle, .skops, or an MLflow model directory)"
    )


def _check_estimator(model: Any, source: Path) -> None:
    from sklearn.base import BaseEstimator

    if not isinstance(model, BaseEstimator) or not hasattr(model, "predict"):
        raise ModelImportError(
            f"'{source.name}' holds a {type(model).__module__}.{type(model).__name__}, "
            "not a fitted scikit-learn estimator or Pipeline"
        )


def load_notebook_estimator(path: Path, fmt: str, trust_pickle: bool) -> Any:
    """The estimator in a joblib/pickle/skops file.

    Raises:
        UntrustedPickleError: a pickle without ``trust_pickle``.
        ModelImportError: untrusted skops types, missing modules, not an estimator.
    """
    if fmt == "skops":
        import skops.io

        types = find_untrusted_skops_types(file=path)
        check_trusted_types(types, f"skops file '{path.name}'")
        try:
            model = skops.io.load(str(path), trusted=types)
        except Exception as exc:
            raise ModelImportError(
                f"'{path.name}' is not a readable skops file: {type(exc).__name__}: {exc}".splitlines()[
                    0
                ]
            ) from exc
    else:
        if not trust_pickle:
            raise UntrustedPickleError(
                f"Refusing to load '{path.name}': unpickling a {fmt} file runs code from it. "
                "Pass --trust-pickle (trust_pickle=True) if you trust its origin"
            )
        model = load_trusted_pickle(path)
    _check_estimator(model, path)
    return model


def _sample_for(model: Any, sample: Path, target: str | None) -> tuple[Any, Any]:
    x, y = read_sample_csv(sample, target)
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        features = [str(n) for n in names]
        extra = [c for c in x.columns if c not in features]
        x = select_features(x, features, f"sample '{sample.name}'")
        if extra:
            logger.info("sample columns left out of the signature (not model features): %s", extra)
    elif target is None:
        logger.warning("no --target given: every sample column is taken as a feature")
    return x, y


def build_notebook_model(
    source: str | Path,
    out_dir: str | Path,
    *,
    sample: str | Path | None = None,
    target: str | None = None,
    trust_pickle: bool = False,
    archive_limits: ArchiveLimits | None = None,
) -> BuiltModel:
    """Build an MLflow model from a notebook artifact.

    Args:
        source: a joblib/pickle/skops file or an MLflow model directory (or a zip of one).
        out_dir: where to write the MLflow model (must not exist yet, or be empty).
        sample: CSV of sample rows (signature, input example, a sample score when
            ``target`` is given).
        target: the sample's target column (left out of the signature).
        trust_pickle: consent to unpickle joblib/pickle files.

    Returns:
        The :class:`BuiltModel`.

    Raises:
        UntrustedPickleError, ModelImportError: see :func:`load_notebook_estimator`;
            also a sample lacking the target or the model's features.
    """
    import mlflow.sklearn
    from mlflow.models import Model

    source = Path(source)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ModelImportError(f"Output folder '{out}' is not empty")
    if out.exists():
        out.rmdir()
    with tempfile.TemporaryDirectory(prefix="notebook-import-") as tmp:
        path = materialize_source(source, Path(tmp), archive_limits)
        fmt = notebook_format(path)
        sha = sha256_path(source)
        x = y = None
        params: dict[str, str] = {}
        metrics: dict[str, float] = {}
        if fmt == "mlflow":
            mlmodel = Model.load(str(path / "MLmodel"))
            if "python_function" not in mlmodel.flavors:
                raise ModelImportError(
                    f"MLflow model '{path.name}' has no python_function flavor "
                    f"(flavors: {', '.join(mlmodel.flavors)})"
                )
            reason = unpickling_reason(path)
            if reason is not None and not trust_pickle:
                # The baseline and the gates load the model: without consent, nothing may.
                raise UntrustedPickleError(
                    f"Refusing to load MLflow model '{source.name}': {reason}, and unpickling "
                    "runs code from it. Pass --trust-pickle (trust_pickle=True) if you trust "
                    "its origin"
                )
            if sample is not None:
                x, y = read_sample_csv(Path(sample), target)
                if mlmodel.signature is not None:
                    x = select_features(
                        x, mlmodel.signature.inputs.input_names(), f"sample '{Path(sample).name}'"
                    )
            copy_tree(path, out)
            if not (out / "requirements.txt").is_file():
                (out / "requirements.txt").write_text("\n".join(pinned_requirements()) + "\n")
            if mlmodel.signature is None and x is not None:
                _add_signature(out, x)
            summary = f"MLflow model directory with flavors {', '.join(sorted(mlmodel.flavors))}"
            params["flavors"] = ",".join(sorted(mlmodel.flavors))
            tags = provenance_tags("notebook", fmt, source, sha)
        else:
            model = load_notebook_estimator(path, fmt, trust_pickle)
            estimator_name = f"{type(model).__module__}.{type(model).__name__}"
            params["estimator"] = estimator_name
            signature = None
            example = None
            if sample is not None:
                x, y = _sample_for(model, Path(sample), target)
                try:
                    predictions = model.predict(x)
                except Exception as exc:
                    raise ModelImportError(
                        f"The model cannot score sample '{Path(sample).name}': "
                        f"{type(exc).__name__}: {exc}".splitlines()[0]
                    ) from exc
                signature = quiet_infer_signature(x, predictions)
                example = x.head(5)
                if y is not None:
                    metrics.update(_sample_metrics(model, x, y))
            else:
                logger.warning("no sample given: the model is saved without a signature")
            trusted = skops_trusted_types_for(model)
            tags = provenance_tags("notebook", fmt, source, sha, {ESTIMATOR_TAG: estimator_name})
            with quiet_mlflow_save():
                mlflow.sklearn.save_model(
                    model,
                    str(out),
                    serialization_format="skops",
                    skops_trusted_types=trusted,
                    signature=signature,
                    input_example=example,
                    pip_requirements=pinned_requirements(),
                    metadata={"lifecycle_provenance": tags},
                )
            summary = f"notebook {fmt} file holding {type(model).__name__}"
    logger.info("built notebook model %s from %s", out, source)
    return BuiltModel(
        model_dir=out,
        kind="notebook",
        fmt=fmt,
        source_name=source.name,
        source_sha256=sha,
        tags=tags,
        params=params,
        metrics=metrics,
        sample=x,
        labels=y,
        summary=summary,
    )


def _add_signature(model_dir: Path, x: Any) -> None:
    """Give a signature-less MLflow model the signature of the sample and its predictions."""
    from mlflow.models import Model

    try:
        predictions = load_pyfunc(str(model_dir)).predict(x)
    except Exception as exc:
        raise ModelImportError(
            f"The MLflow model cannot score the sample: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    mlmodel = Model.load(str(model_dir / "MLmodel"))
    mlmodel.signature = quiet_infer_signature(x, predictions)
    mlmodel.save(str(model_dir / "MLmodel"))
    logger.info("added a signature inferred from the sample to %s", model_dir)


def _sample_metrics(model: Any, x: Any, y: Any) -> dict[str, float]:
    from sklearn.base import is_classifier, is_regressor

    try:
        value = float(model.score(x, y))
    except Exception as exc:  # a label type the model cannot compare is reported, not fatal
        logger.warning("could not score the sample against its target: %s", exc)
        return {}
    if is_classifier(model):
        return {"sample_accuracy": value}
    if is_regressor(model):
        return {"sample_r2": value}
    return {"sample_score": value}
