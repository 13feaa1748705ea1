"""Virtual environments with Microsoft's own packages, for making real Designer and AutoML
artifacts (and, for AutoML, running them), and with the peer tools the serving tests compare
with (``peers``): built once from a pinned recipe and cached, keyed by the recipe's hash, so
that a second build is a lookup.

The recipes follow ``shared/reference/real-artifacts.md``: every package pinned exactly
(``<name>.lock``, a ``pip freeze`` of a working environment), then the packages whose own
pins cannot install on Python 3.11 added with ``--no-deps`` (``NO_DEPS``). Nothing
installed is edited; what the code needs on 3.11 is restored at run time by a shim
(``designer_shim.py``, ``automl_shim.py``).

Cache: ``$LIFECYCLE_FIXTURE_ENVS`` or ``~/.cache/mlflow-lifecycle/fixture-envs/<name>-<hash>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock

HERE = Path(__file__).resolve().parent
#: AutoML's lock ships with the toolkit (its model environments use it); Designer's is
#: only for making fixtures.
LOCKS = {
    "designer": HERE / "designer.lock",
    "automl": Path(__file__).resolve().parents[3]
    / "lifecycle"
    / "base"
    / "recipes"
    / "automl.lock",
    # The peers the serving tests compare with: MLServer 1.7 with its MLflow runtime, and
    # the kserve SDK (its InferenceService model classes). Neither can share the toolkit's
    # environment (kserve and MLServer pin pandas < 3 and an older FastAPI).
    "peers": HERE.parent / "peers.lock",
}
#: Packages installed after the lock with ``--no-deps``, per environment.
NO_DEPS: dict[str, tuple[str, ...]] = {
    "designer": (
        "azureml-designer-classic-modules==0.0.195",
        "azureml-designer-core==0.0.86",
        "azureml-designer-internal==0.0.78",
        "azureml-designer-serving==0.0.19",
    ),
    # onnxruntime 1.17.3's cp311 wheel declares numpy >= 1.24.2 against the runtime's
    # numpy <= 1.23.5; azureml-automl-core wants azureml-telemetry ~= 1.62 whose own pins
    # name an unpublished azureml-core; azureml-dataset-runtime wants a newer pyarrow pin.
    "automl": (
        "onnxruntime==1.17.3",
        "azureml-automl-runtime==1.62.0.post1",
        "azureml-training-tabular==1.62.0.post1",
        "azureml-automl-core==1.62.0.post3",
        "azureml-dataset-runtime==1.62.0.post1",
        "azureml-telemetry==1.62.0",
    ),
}
#: Installed before the lock, per environment: pmdarima 1.8.5 has no cp311 wheel and its
#: sdist needs numpy, Cython < 3 and setuptools' pkg_resources at build time.
BEFORE: dict[str, tuple[tuple[str, ...], ...]] = {
    "automl": (
        ("numpy==1.23.5", "Cython==0.29.37", "setuptools", "wheel"),
        ("--no-build-isolation", "pmdarima==1.8.5"),
    ),
}
_DONE = ".complete"


def recipe_hash(name: str) -> str:
    """sha256 over everything that decides the environment: lock, no-deps list, Python."""
    digest = hashlib.sha256()
    digest.update(LOCKS[name].read_bytes())
    digest.update("\n".join(NO_DEPS.get(name, ())).encode())
    if name in BEFORE:
        digest.update(repr(BEFORE[name]).encode())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """Where the environments are kept."""
    explicit = os.environ.get("LIFECYCLE_FIXTURE_ENVS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-lifecycle" / "fixture-envs"


def ensure_env(name: str, log=print) -> Path:  # type: ignore[no-untyped-def]
    """The environment ``name`` (its folder), built first if the cache has none for the
    current recipe. Safe when several processes ask at once (a file lock)."""
    if name == "automl":
        # The same environment as an imported AutoML model's (one build per machine).
        from lifecycle.base.envs import automl_spec, prepare_env

        return prepare_env(automl_spec(), log=log)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = root / f"{name}-{recipe_hash(name)}"
    with FileLock(str(env) + ".lock"):
        if (env / _DONE).is_file():
            return env
        shutil.rmtree(env, ignore_errors=True)
        t0 = time.monotonic()
        log(f"building the {name} environment in {env} (first time only; ~2 min, ~1.3 GB)")
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        for step in BEFORE.get(name, ()):
            subprocess.run([*pip, *step], check=True)
        subprocess.run([*pip, "-r", str(LOCKS[name])], check=True)
        if NO_DEPS.get(name):
            subprocess.run([*pip, "--no-deps", *NO_DEPS[name]], check=True)
        (env / _DONE).write_text(f"{time.monotonic() - t0:.0f} s\n")
        log(f"built the {name} environment in {time.monotonic() - t0:.0f} s")
    return env


def env_python(name: str) -> Path:
    """The interpreter of environment ``name`` (built if needed)."""
    return ensure_env(name) / "bin" / "python"
