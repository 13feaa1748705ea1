"""A real AutoML ``model.pkl`` -> an MLflow model that runs in AutoML's own environment.

A model trained by Azure ML AutoML unpickles only where ``azureml-automl-runtime`` is
installed, which can never be the toolkit's environment (it pins pandas 1.5.3, numpy <=
1.23.5). The MLflow model written here keeps ``model.pkl`` byte for byte, loads it with
:mod:`models._automl_pyfunc` (shipped in the model's ``code/``), pins AutoML's known-good
environment as its requirements and records it in ``lifecycle_env/``, so that every
command runs it in a worker inside that environment (:mod:`lifecycle.base.envs`). Nothing
is unpickled here; the pickle is scanned by opcode only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lifecycle.base.envs import automl_spec, write_spec
from lifecycle.base.errors import ModelImportError, UntrustedPickleError
from models.common import quiet_infer_signature, quiet_mlflow_save

logger = logging.getLogger(__name__)

#: Modules of AutoML's runtime: a pickle naming one needs AutoML's environment.
AUTOML_RUNTIME_MODULES = ("azureml.automl", "azureml.training.tabular")
_LOADER = Path(__file__).resolve().parent / "_automl_pyfunc.py"


def needs_automl_runtime(missing: list[str]) -> bool:
    """Whether modules missing here include AutoML's runtime (so AutoML's environment)."""
    return any(m == p or m.startswith(p + ".") for m in missing for p in AUTOML_RUNTIME_MODULES)


def _signature(input_df: Any, output: Any, signature: Any) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    base = signature if signature is not None else quiet_infer_signature(input_df, output)
    params = ParamSchema([ParamSpec("method", "string", "predict")])
    return ModelSignature(inputs=base.inputs, outputs=base.outputs, params=params)


def save_automl_env_model(
    pkl: Path,
    out: Path,
    *,
    trust_pickle: bool,
    input_df: Any = None,
    output: Any = None,
    signature: Any = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write the MLflow model for AutoML's ``pkl`` into ``out`` (which must not exist).

    The signature comes from the scoring file's samples (``input_df``, ``output``) or is
    the AutoML MLflow model's own (``signature``); either gains the ``method`` parameter
    (``predict`` or ``predict_proba``) of AutoML's scoring file.

    Raises:
        UntrustedPickleError: no consent: the model would be unpickled at every load.
        ModelImportError: neither samples nor a signature describe the input.
    """
    import mlflow.pyfunc

    if not trust_pickle:
        raise UntrustedPickleError(
            f"Refusing to import AutoML '{pkl.name}': it is unpickled (runs code) every time "
            "the model loads, in AutoML's environment. Pass --trust-pickle (trust_pickle=True) "
            "if you trust its origin"
        )
    if input_df is None and signature is None:
        raise ModelImportError(
            f"AutoML '{pkl}': no scoring file with an input sample and no MLmodel signature "
            "to describe the input"
        )
    spec = automl_spec(trust_pickle=True)
    with quiet_mlflow_save():
        mlflow.pyfunc.save_model(
            str(out),
            loader_module=_LOADER.stem,
            data_path=str(pkl),
            code_paths=[str(_LOADER)],
            signature=_signature(input_df, output, signature),
            input_example=input_df.head(1) if input_df is not None else None,
            pip_requirements=["pandas"],  # replaced by the environment's pins below
            metadata=metadata,
        )
    pins = [
        line
        for line in spec.files["automl.lock"].splitlines()
        if line.strip() and not line.startswith("#")
    ]
    no_deps = [a for step in spec.steps for a in step if "==" in a and a not in pins]
    reqs = [*pins, *no_deps]
    (out / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
    conda_file = out / "conda.yaml"
    if conda_file.is_file():
        import yaml

        conda = yaml.safe_load(conda_file.read_text(encoding="utf-8")) or {}
        deps = [d for d in conda.get("dependencies") or [] if not isinstance(d, dict)]
        conda["dependencies"] = [*deps, {"pip": reqs}]
        conda_file.write_text(yaml.safe_dump(conda, sort_keys=False), encoding="utf-8")
    write_spec(spec, out)
    logger.info("AutoML model %s runs in environment '%s'", pkl.name, spec.name)
