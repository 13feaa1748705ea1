"""What every importer shares: the built-model record, pinned requirements, provenance,
signatures and input examples, skops trusted types, safe zip extraction and sample CSVs.

Nothing here touches a registry: importers build an MLflow model directory and describe it
with a :class:`BuiltModel`; ``lifecycle.imports`` registers it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.base.errors import ModelImportError
from lifecycle.base.tags import (
    IMPORTED_BY_TAG,
    ORIGIN_FORMAT_TAG,
    ORIGIN_KIND_TAG,
    SOURCE_NAME_TAG,
    SOURCE_SHA_TAG,
)
from lifecycle.base.workspaces import quiet_mlflow_progress
from models.archives import ArchiveLimits, safe_extract_zip, zip_content_sha256

logger = logging.getLogger(__name__)

#: Packages every imported model needs at scoring time (pinned to the installed versions).
BASE_PACKAGES = ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")

#: Top-level packages whose classes the importers accept inside a model (skops or pickle).
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy", "pandas")
#: The types, beyond skops' own default trust, that a model's skops file may hold (exact
#: names): scikit-learn's compiled tree structures and NumPy's dtype (an encoder's ``dtype``
#: parameter). Everything else skops does not trust by default (functions such as
#: ``numpy.load`` or ``pandas.read_pickle`` above all) is refused.
SKOPS_TRUSTED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "numpy.dtype",
    }
)

#: Provenance tag keys (set on the run and on the registered version).

#: Where an importer's extra provenance files go among the run's artifacts.
PROVENANCE_ARTIFACT_PATH = "provenance"


@dataclass
class BuiltModel:
    """An MLflow model directory made by an importer, and what is known about its origin.

    Attributes:
        model_dir: the MLflow model directory (has ``MLmodel``).
        kind: origin kind: ``notebook``, ``designer`` or ``automl``.
        fmt: the origin's format (``joblib``, ``pickle``, ``skops``, ``mlflow``,
            ``model_directory``, ``mlflow_model``, ``automl_outputs``).
        source_name: file or folder name of the origin artifact.
        source_sha256: SHA-256 of the origin artifact (a folder: over its files).
        tags: provenance tags for the run and the version.
        params: run params; metrics: run metrics.
        provenance_files: files kept beside the model as provenance (name -> path).
        sample: sample input rows (feature columns only), when known.
        labels: the sample's target values, when known.
        summary: one line saying what was built.
    """

    model_dir: Path
    kind: str
    fmt: str
    source_name: str
    source_sha256: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    provenance_files: dict[str, Path] = field(default_factory=dict)
    sample: Any = None
    labels: Any = None
    summary: str = ""


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (None when not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned_requirements(extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``name==version`` for :data:`BASE_PACKAGES` plus ``extra``, from this environment.

    Packages that are not installed are left out (and logged).
    """
    out: list[str] = []
    for dist in (*BASE_PACKAGES, *extra):
        version = installed_version(dist)
        if version is None:
            logger.warning("requirement %s is not installed here; left out", dist)
            continue
        line = f"{dist}=={version}"
        if line not in out:
            out.append(line)
    return out


def sha256_path(path: Path, limits: ArchiveLimits | None = None) -> str:
    """Hex SHA-256 of a file, or of a folder's files (relative names and contents, sorted).

    A zip archive (other than a skops file) is hashed by what it holds, as the folder it
    unpacks to (:func:`models.archives.zip_content_sha256`, within ``limits``): an origin
    handed over as a folder and as a zip of it is the same source.
    """
    h = hashlib.sha256()
    if path.is_file() and zipfile.is_zipfile(path) and not is_skops_file(path):
        return zip_content_sha256(path, limits)
    if path.is_file():
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(item.relative_to(path).as_posix().encode() + b"\0")
        with open(item, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def provenance_tags(
    kind: str, fmt: str, source: Path, sha: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The provenance tags of an import (origin kind and format, source name and sha256)."""
    tags = {
        ORIGIN_KIND_TAG: kind,
        ORIGIN_FORMAT_TAG: fmt,
        SOURCE_NAME_TAG: source.name,
        SOURCE_SHA_TAG: sha,
        IMPORTED_BY_TAG: f"mlflow-lifecycle {installed_version('mlflow-lifecycle') or 'dev'}",
    }
    for key, value in (extra or {}).items():
        tags[key] = str(value)[:5000]
    return tags


def require_file(folder: Path, name: str, what: str) -> Path:
    """``folder/name``, which must exist.

    Raises:
        ModelImportError: the file is missing.
    """
    path = folder / name
    if not path.is_file():
        raise ModelImportError(f"{what} '{folder}' has no '{name}' file (expected {path})")
    return path


def materialize_source(source: Path, workdir: Path, limits: ArchiveLimits | None = None) -> Path:
    """``source`` as a folder: a zip is extracted safely into ``workdir`` within ``limits``
    (:mod:`models.archives`); a folder is kept.

    Raises:
        ModelImportError: the source does not exist, or is a bad or oversized zip.
    """
    if not source.exists():
        raise ModelImportError(f"Source '{source}' does not exist")
    if source.is_file() and zipfile.is_zipfile(source) and not is_skops_file(source):
        return safe_extract_zip(source, workdir / "extracted", limits)
    return source


def is_skops_file(path: Path) -> bool:
    """True for a skops file (a zip with a top-level ``schema.json``, or a ``.skops`` name)."""
    if path.suffix.lower() == ".skops":
        return True
    if path.suffix.lower() == ".zip" or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return "schema.json" in zf.namelist()


def find_untrusted_skops_types(data: bytes | None = None, file: Path | None = None) -> list[str]:
    """The types skops would refuse to load by default in ``data`` or ``file``."""
    import skops.io

    if file is not None:
        return list(skops.io.get_untrusted_types(file=str(file)))
    return list(skops.io.get_untrusted_types(data=data))


def skops_trusted_types_for(model: Any) -> list[str]:
    """The types to declare trusted when saving ``model`` with skops: exactly those found in it.

    Raises:
        ModelImportError: the model holds a type from outside scikit-learn/NumPy/SciPy/pandas.
    """
    import skops.io

    types = find_untrusted_skops_types(data=skops.io.dumps(model))
    check_trusted_types(types, "model")
    return sorted(types)


def check_trusted_types(types: list[str], what: str) -> None:
    """Refuse ``types`` (those skops does not trust by default) that are not on
    :data:`SKOPS_TRUSTED_TYPES`.

    Raises:
        ModelImportError: naming the offending types (the first five).
    """
    bad = sorted(t for t in types if t not in SKOPS_TRUSTED_TYPES)
    if bad:
        raise ModelImportError(
            f"The {what} holds types that skops does not trust and the allow-list does not "
            f"name: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; refused"
        )


def read_sample_csv(path: Path, target: str | None = None) -> tuple[Any, Any]:
    """Read a sample CSV; split off ``target``.

    Returns:
        (features DataFrame, target Series or None).

    Raises:
        ModelImportError: the file is missing, empty, or lacks the target column.
    """
    import pandas as pd

    if not path.is_file():
        raise ModelImportError(f"Sample file '{path}' does not exist")
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise ModelImportError(f"Sample file '{path}' is not a readable CSV: {exc}") from exc
    if df.empty:
        raise ModelImportError(f"Sample file '{path}' has no rows")
    labels = None
    if target is not None:
        if target not in df.columns:
            raise ModelImportError(
                f"Target column '{target}' is not in sample '{path.name}'. "
                f"Columns: {', '.join(map(str, df.columns))}"
            )
        labels = df[target]
        df = df.drop(columns=[target])
    return df, labels


def select_features(df: Any, features: list[str], what: str) -> Any:
    """``df[features]`` in that order.

    Raises:
        ModelImportError: naming the features ``df`` lacks.
    """
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise ModelImportError(
            f"The {what} lacks the model's feature column(s): {', '.join(map(str, missing))}"
        )
    return df[features]


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (created; it must not hold anything yet).

    Raises:
        ModelImportError: ``path`` exists and is not empty.
    """
    if path.exists() and any(path.iterdir()):
        raise ModelImportError(f"Output folder '{path}' is not empty")
    path.mkdir(parents=True, exist_ok=True)
    return path


def copy_tree(src: Path, dest: Path) -> Path:
    """Copy folder ``src`` to ``dest`` (which must not exist), without following symlinks."""
    for item in src.rglob("*"):
        if item.is_symlink():
            raise ModelImportError(f"'{item}' is a symbolic link; refused")
    shutil.copytree(src, dest, symlinks=False)
    return dest


@contextlib.contextmanager
def quiet_mlflow_save() -> Iterator[None]:
    """Silence MLflow's advice while saving a model (integer-column hints, type-hint notes,
    artifact progress bars): the importer already decided those points."""
    with quiet_mlflow_progress(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        yield


def quiet_infer_signature(model_input: Any, model_output: Any = None) -> Any:
    """``mlflow.models.infer_signature`` without its integer-column advice."""
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return infer_signature(model_input, model_output)
