"""Model environments: the virtual environment a model needs when the toolkit's own cannot
load it (issue #14). A real AutoML model needs ``azureml-automl-runtime``, which pins pandas
1.5.3 and numpy <= 1.23.5 and so can never share an environment with the toolkit.

An imported model records its environment in ``lifecycle_env/env.json`` (pip install steps,
the files they name beside it, the Python it needs, the modules that show whether the
current environment can load it). A model without that file is described by its own
``requirements.txt`` (and ``python_env.yaml``), as ``mlflow models serve --env-manager
virtualenv`` reads it. :func:`prepare_env` builds the environment once, keyed by the hash of
that spec, under ``$LIFECYCLE_ENV_CACHE`` (default ``~/.cache/mlflow-lifecycle/envs``), from
the package index or offline from a wheelhouse; every command reuses it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.base.errors import InvalidArgumentError, ModelEnvError

logger = logging.getLogger(__name__)

#: The folder inside an MLflow model that holds its recorded environment.
ENV_DIR = "lifecycle_env"
ENV_FILE = "env.json"
#: ``--env-manager`` values, as MLflow names them, plus the default.
ENV_MANAGERS = ("auto", "local", "virtualenv")
_DONE = ".complete"
_RECIPES = Path(__file__).resolve().parent / "recipes"


@dataclass(frozen=True)
class EnvSpec:
    """How to build a model's environment.

    ``steps`` are ``pip install`` argument lists run in order; ``files`` maps the names the
    steps use (``-r automl.lock``) to their text; ``modules`` are the top-level imports whose
    absence here means the current environment cannot load the model; ``required`` says the
    model can never load here (AutoML's runtime).
    """

    name: str
    python: str
    steps: tuple[tuple[str, ...], ...]
    files: dict[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] = ()
    required: bool = False
    trust_pickle: bool = False

    def digest(self) -> str:
        """sha256 (16 hex digits) of everything that decides what gets installed."""
        h = hashlib.sha256()
        h.update(json.dumps([self.python, [list(s) for s in self.steps]]).encode())
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + self.files[name].encode() + b"\0")
        return h.hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """What ``env.json`` holds (the files are written beside it)."""
        return {
            "version": 1,
            "name": self.name,
            "python": self.python,
            "steps": [list(s) for s in self.steps],
            "files": sorted(self.files),
            "modules": list(self.modules),
            "required": self.required,
            "trust_pickle": self.trust_pickle,
        }


def automl_spec(*, trust_pickle: bool = False) -> EnvSpec:
    """The known-good environment of Azure ML AutoML's runtime 1.62 on Python 3.11
    (``shared/reference/real-artifacts.md``): numpy, Cython and pmdarima built first, every
    package pinned by ``automl.lock``, then the runtime's packages whose own pins cannot
    resolve on 3.11 with ``--no-deps``."""
    return EnvSpec(
        name="azureml-automl-runtime-1.62",
        python="3.11",
        steps=(
            ("numpy==1.23.5", "Cython==0.29.37", "setuptools", "wheel"),
            ("--no-build-isolation", "pmdarima==1.8.5"),
            ("-r", "automl.lock"),
            (
                "--no-deps",
                "onnxruntime==1.17.3",
                "azureml-automl-runtime==1.62.0.post1",
                "azureml-training-tabular==1.62.0.post1",
                "azureml-automl-core==1.62.0.post3",
                "azureml-dataset-runtime==1.62.0.post1",
                "azureml-telemetry==1.62.0",
            ),
        ),
        files={"automl.lock": (_RECIPES / "automl.lock").read_text(encoding="utf-8")},
        modules=("azureml.automl.runtime", "azureml.training.tabular", "lightgbm"),
        required=True,
        trust_pickle=trust_pickle,
    )


def write_spec(spec: EnvSpec, model_dir: str | Path) -> Path:
    """Record ``spec`` in ``model_dir/lifecycle_env/``; returns that folder."""
    folder = Path(model_dir) / ENV_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in spec.files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / ENV_FILE).write_text(json.dumps(spec.to_json(), indent=1) + "\n", encoding="utf-8")
    return folder


_REQ_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)")


def _requirement_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _REQ_NAME.match(line)
        if match:
            names.append(match.group(1))
    return names


def read_spec(model_dir: str | Path) -> EnvSpec | None:
    """The environment the MLflow model in ``model_dir`` records, or one made from its
    ``requirements.txt`` / ``python_env.yaml``; None when it names neither.

    Raises:
        ModelEnvError: ``env.json`` is unreadable or names a file that is missing.
    """
    root = Path(model_dir)
    env_json = root / ENV_DIR / ENV_FILE
    if env_json.is_file():
        try:
            raw = json.loads(env_json.read_text(encoding="utf-8"))
            files = {n: (root / ENV_DIR / n).read_text(encoding="utf-8") for n in raw["files"]}
            return EnvSpec(
                name=str(raw["name"]),
                python=str(raw["python"]),
                steps=tuple(tuple(str(a) for a in s) for s in raw["steps"]),
                files=files,
                modules=tuple(raw.get("modules") or ()),
                required=bool(raw.get("required")),
                trust_pickle=bool(raw.get("trust_pickle")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelEnvError(f"'{env_json}' is not a readable environment spec: {exc}") from exc
    req = root / "requirements.txt"
    if not req.is_file():
        return None
    text = req.read_text(encoding="utf-8")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    build: tuple[str, ...] = ()
    py_env = root / "python_env.yaml"
    if py_env.is_file():
        import yaml

        conf = yaml.safe_load(py_env.read_text(encoding="utf-8")) or {}
        python = ".".join(str(conf.get("python") or python).split(".")[:2])
        build = tuple(str(d) for d in conf.get("build_dependencies") or ())
    names = _requirement_names(text)
    steps = ((*build,), ("-r", "requirements.txt")) if build else (("-r", "requirements.txt"),)
    return EnvSpec(
        name="requirements",
        python=python,
        steps=steps,
        files={"requirements.txt": text},
        modules=tuple(names),
    )


def _installed(name: str) -> bool:
    """Whether a distribution or a top-level module called ``name`` is installed here
    (nothing is imported to answer)."""
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    top = name.split(".")[0].replace("-", "_")
    try:
        if importlib.util.find_spec(top) is None:
            return False
    except (ImportError, ValueError):
        return False
    if "." not in name:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_here(spec: EnvSpec) -> list[str]:
    """The modules or distributions ``spec`` names that the current environment lacks."""
    return [m for m in spec.modules if not _installed(m)]


def choose_env_manager(model_dir: str | Path, env_manager: str = "auto") -> EnvSpec | None:
    """The environment to run the model in: None for this process (``local``), else the
    spec to run a worker in (``virtualenv``). ``auto`` picks the model's own environment
    when it is required (AutoML) or when this environment lacks a module it names.

    Raises:
        InvalidArgumentError: an unknown ``env_manager``, or ``virtualenv`` for a model that
            records no environment.
    """
    if env_manager not in ENV_MANAGERS:
        raise InvalidArgumentError(
            f"--env-manager '{env_manager}' is not one of: {', '.join(ENV_MANAGERS)}"
        )
    if env_manager == "local":
        return None
    spec = read_spec(model_dir)
    if env_manager == "virtualenv":
        if spec is None:
            raise InvalidArgumentError(
                f"--env-manager virtualenv: the model in '{model_dir}' records no environment "
                "(no lifecycle_env/env.json and no requirements.txt)"
            )
        return spec
    if spec is None:
        return None
    if spec.required or missing_here(spec):
        return spec
    return None


def cache_root() -> Path:
    """Where model environments are kept."""
    explicit = os.environ.get("LIFECYCLE_ENV_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-lifecycle" / "envs"


def env_path(spec: EnvSpec) -> Path:
    """The folder of ``spec``'s environment (built or not)."""
    return cache_root() / f"{spec.name}-{spec.digest()}"


def env_python(spec: EnvSpec) -> Path:
    """The interpreter of ``spec``'s environment.

    Raises:
        ModelEnvError: it has not been prepared (the command to do so is named).
    """
    env = env_path(spec)
    if not (env / _DONE).is_file():
        raise ModelEnvError(
            f"the model's environment '{spec.name}' is not prepared in {env}: "
            "run `lifecycle env prepare MODEL_URI` first"
        )
    return env / "bin" / "python"


def _base_python(version: str) -> str:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version == here:
        return getattr(sys, "_base_executable", sys.executable)
    found = shutil.which(f"python{version}")
    if found is None:
        raise ModelEnvError(
            f"the model's environment needs Python {version}; this machine has {here} "
            f"and no python{version} on PATH"
        )
    return found


def prepare_env(
    spec: EnvSpec,
    *,
    find_links: str | Path | None = None,
    log: Callable[[str], None] = logger.info,
) -> Path:
    """Build ``spec``'s environment unless the cache holds it; returns its folder.

    Safe when several processes ask at once (a file lock); a failed or killed build leaves
    no environment behind that looks complete. With ``find_links`` pip installs offline
    from that wheelhouse (``--no-index``).

    Raises:
        ModelEnvError: a pip step failed (its last lines are in the message).
    """
    from filelock import FileLock

    env = env_path(spec)
    env.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(env) + ".lock"):
        if (env / _DONE).is_file():
            logger.info("environment '%s' is ready in %s (cached)", spec.name, env)
            return env
        shutil.rmtree(env, ignore_errors=True)
        t0 = time.monotonic()
        log(f"building environment '{spec.name}' in {env} (first time only)")
        _run([_base_python(spec.python), "-m", "venv", str(env)], "create the virtualenv")
        files = env / ENV_DIR
        files.mkdir()
        for name, text in spec.files.items():
            (files / name).write_text(text, encoding="utf-8")
        pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if find_links is not None:
            pip += ["--no-index", "--find-links", str(Path(find_links).resolve())]
        steps = [s for s in spec.steps if s]
        for i, step in enumerate(steps, 1):
            args = [str(files / a) if a in spec.files else a for a in step]
            log(f"  step {i}/{len(steps)}: pip install {' '.join(step)}")
            _run([*pip, *args], f"pip install {' '.join(step)}")
        probe = subprocess.run(
            [str(env / "bin" / "python"), "-c", "import pyarrow, pandas"],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            log("  step: pip install pyarrow pandas (the worker exchanges data as Arrow)")
            _run([*pip, "pyarrow", "pandas"], "pip install pyarrow pandas")
        (env / _DONE).write_text(json.dumps(spec.to_json()) + "\n", encoding="utf-8")
        log(f"built environment '{spec.name}' in {time.monotonic() - t0:.0f} s")
    return env


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ModelEnvError(f"building the model's environment failed at `{what}`: {tail}")
