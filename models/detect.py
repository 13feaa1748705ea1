"""Which origin an artifact comes from: Designer, AutoML or a notebook, and in what format.

Detection only looks at names (files in a folder, entries in a zip, a file's suffix or
magic bytes); it never loads a model.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lifecycle.base.errors import ModelImportError

KINDS = ("notebook", "designer", "automl")


@dataclass(frozen=True)
class Detection:
    """The detected origin ``kind`` (notebook, designer, automl), ``fmt`` and the evidence."""

    kind: str
    fmt: str
    evidence: str

    def describe(self) -> str:
        """One line: what was found and why."""
        return f"{self.kind} ({self.fmt}): {self.evidence}"


def _from_names(names: list[str], where: str) -> Detection | None:
    base = {PurePosixPath(n).name for n in names}
    parts = {p for n in names for p in PurePosixPath(n).parts}
    if "_meta.yaml" in base:
        return Detection(
            "designer", "model_directory", f"{where} holds _meta.yaml (a ModelDirectory)"
        )
    if "mlflow-model" in parts and "MLmodel" in base:
        return Detection("automl", "mlflow_model", f"{where} holds an AutoML mlflow-model/ folder")
    if any(b.startswith("scoring_file_v_") for b in base) or any(
        b.startswith("conda_env_v_") for b in base
    ):
        return Detection(
            "automl", "automl_outputs", f"{where} holds AutoML scoring_file_v_*/conda_env_v_* files"
        )
    if "MLmodel" in base:
        return Detection("notebook", "mlflow", f"{where} holds an MLflow model (MLmodel)")
    return None


def detect_origin(path: str | Path) -> Detection:
    """Detect the origin of ``path`` (a file, a folder or a zip).

    Raises:
        ModelImportError: the path does not exist or matches no origin.
    """
    from models.notebook import notebook_format

    p = Path(path)
    if not p.exists():
        raise ModelImportError(f"'{p}' does not exist")
    if p.is_dir():
        names = [q.relative_to(p).as_posix() for q in p.rglob("*") if q.is_file()]
        if p.name == "mlflow-model" and (p / "MLmodel").is_file():
            return Detection(
                "automl", "mlflow_model", f"'{p.name}' is an AutoML mlflow-model folder"
            )
        if (p / "MLmodel").is_file():
            return Detection("notebook", "mlflow", f"'{p.name}' is an MLflow model directory")
        found = _from_names(names, f"folder '{p.name}'")
        if found is not None:
            return found
        raise ModelImportError(
            f"Cannot tell the origin of folder '{p}': no _meta.yaml (Designer), no "
            "mlflow-model/ or scoring_file_v_*.py (AutoML), no MLmodel (MLflow model)"
        )
    if zipfile.is_zipfile(p) and p.suffix.lower() != ".skops":
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
        if "schema.json" in names and p.suffix.lower() != ".zip":
            return Detection("notebook", "skops", f"'{p.name}' is a skops file")
        found = _from_names(names, f"zip '{p.name}'")
        if found is not None:
            return found
        if "schema.json" in names:
            return Detection("notebook", "skops", f"'{p.name}' is a skops file")
        raise ModelImportError(f"Cannot tell the origin of zip '{p.name}': no known layout inside")
    fmt = notebook_format(p)
    return Detection("notebook", fmt, f"'{p.name}' is a {fmt} file")
