"""Consent to unpickle: which model files would run code when loaded, and where the user's
consent to that is recorded.

A registered version carries its consent as a version tag (:data:`PICKLE_CONSENT_TAG`),
written by ``lifecycle import … --trust-pickle``, by ``lifecycle trust NAME VERSION`` and,
for the same bytes, by a promotion; anything else (a model directory, a ``runs:/`` URI) is
loaded only with ``--trust-pickle`` on the command, which the CLI carries to the processes it
starts in ``$LIFECYCLE_TRUST_PICKLE``. :func:`require_consent` is checked by the one fetch
(:func:`lifecycle.base.fetch.fetch_model`), so serving, batch scoring, gates, monitoring and
Azure specs all refuse the same way.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

from lifecycle.base.errors import UntrustedPickleError
from lifecycle.base.tags import PICKLE_CONSENT_TAG

#: Files that hold pickles, by how they end.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle")
#: Set to ``1`` by the CLI's ``--trust-pickle`` so the processes it starts see the consent.
TRUST_PICKLE_VAR = "LIFECYCLE_TRUST_PICKLE"

__all__ = [
    "PICKLE_CONSENT_TAG",
    "PICKLE_SUFFIXES",
    "TRUST_PICKLE_VAR",
    "consent_tag_value",
    "require_consent",
    "trusted_by_flag",
    "unpickling_reason",
]


def unpickling_reason(model_dir: str | Path) -> str | None:
    """Why loading the MLflow model in ``model_dir`` would unpickle (run code from) a file,
    or None when it would not. Read from ``MLmodel`` and the file names only.

    A scikit-learn model saved with skops and a models-from-code pyfunc load without
    unpickling; a pickle or cloudpickle serialization, a cloudpickled ``python_model``, or
    any pickle file among the model's files do not.
    """
    import yaml

    root = Path(model_dir)
    mlmodel = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8")) or {}
    flavors = mlmodel.get("flavors") or {}
    sk = flavors.get("sklearn") or {}
    fmt = sk.get("serialization_format")
    if sk and fmt != "skops":
        return f"its scikit-learn model is serialized with {fmt or 'pickle'}"
    pyfunc = flavors.get("python_function") or {}
    # A cloudpickled PythonModel names its pickle (python_model.pkl); a models-from-code
    # pyfunc (loader mlflow.pyfunc.loaders.code_model) records cloudpickle's version too but
    # loads its code file, not a pickle.
    from_code = bool(pyfunc.get("model_code_path")) or str(pyfunc.get("loader_module", "")) == (
        "mlflow.pyfunc.loaders.code_model"
    )
    if pyfunc.get("python_model") or (pyfunc.get("cloudpickle_version") and not from_code):
        return "its python_model is cloudpickled"
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.lower().endswith(PICKLE_SUFFIXES):
            return f"it holds the pickle file '{path.relative_to(root)}'"
    return None


def trusted_by_flag() -> bool:
    """True when this process runs under ``--trust-pickle`` (``$LIFECYCLE_TRUST_PICKLE=1``)."""
    return os.environ.get(TRUST_PICKLE_VAR, "") == "1"


def consent_tag_value(how: str, user: str) -> str:
    """The consent tag's value: who consented, when and how (JSON, one line)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps({"by": user, "at": at, "how": how}, sort_keys=True)


def require_consent(
    path: str,
    *,
    recorded: str | None,
    name: str | None = None,
    version: str | None = None,
    workspace: str | None = None,
    trust_pickle: bool | None = None,
) -> None:
    """Refuse to go on with the model files in ``path`` when loading them would unpickle and
    no consent covers them: neither ``recorded`` on the version nor ``trust_pickle`` (None:
    :func:`trusted_by_flag`).

    Raises:
        UntrustedPickleError: one line naming the version (or path), why it would unpickle
            and the command that consents.
    """
    if recorded:
        return
    if trust_pickle is None:
        trust_pickle = trusted_by_flag()
    if trust_pickle:
        return
    reason = unpickling_reason(path)
    if reason is None:
        return
    if name is not None and version is not None:
        where = f" -w {shlex.quote(workspace)}" if workspace else ""
        in_ws = f" in workspace '{workspace}'" if workspace else ""
        raise UntrustedPickleError(
            f"Refusing to load version {version} of '{name}'{in_ws}: "
            f"{reason} and no consent to unpickle it is recorded on the version; if you trust "
            f"its origin, record it with: lifecycle trust {shlex.quote(name)} {version}{where}"
        )
    raise UntrustedPickleError(
        f"Refusing to load the model in '{path}': {reason}; pass --trust-pickle if you trust "
        "its origin"
    )
