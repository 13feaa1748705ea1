"""Workspaces: named MLflow tracking/registry servers that models move between.

A workspace is a name, a tracking URI, a registry URI and a default artifact location.
With no configuration there are two, ``dev`` and ``prod``, each a SQLite store with its own
artifact folder under ``.lifecycle/`` in the current directory. A ``lifecycle.yaml`` (in the
current directory, or named by ``--config`` / ``LIFECYCLE_CONFIG``) redefines them or adds
others: any MLflow tracking URI (``http://``, ``azureml://``, ``databricks``) works.

Example ``lifecycle.yaml``::

    default: dev
    workspaces:
      dev: {}                              # embedded default
      prod:
        tracking_uri: http://mlflow.prod.internal:5000
      azure:
        tracking_uri: azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/...
        supports_aliases: false            # capability override; detected when absent
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from lifecycle.base.errors import ConfigError, WorkspaceError

logger = logging.getLogger(__name__)

CONFIG_FILE_NAME = "lifecycle.yaml"
CONFIG_ENV = "LIFECYCLE_CONFIG"
HOME_ENV = "LIFECYCLE_HOME"
DEFAULT_WORKSPACES = ("dev", "prod")
_KNOWN_KEYS = {
    "tracking_uri",
    "registry_uri",
    "artifact_location",
    "supports_stages",
    "supports_aliases",
    "supports_logged_models",
    "supports_delete",
    "description",
}


@dataclass(frozen=True)
class Workspace:
    """One MLflow tracking/registry server that models live in.

    The ``supports_*`` flags are ``None`` when not configured: callers then detect the
    capability against the server instead of guessing from the URI scheme.
    """

    name: str
    tracking_uri: str
    registry_uri: str
    artifact_location: str | None = None
    supports_stages: bool | None = None
    supports_aliases: bool | None = None
    supports_logged_models: bool | None = None
    supports_delete: bool | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_local(self) -> bool:
        """True for stores on this machine's disk (SQLite or a file store)."""
        scheme = urlparse(self.tracking_uri).scheme
        return scheme in ("sqlite", "file", "")

    @property
    def is_azureml(self) -> bool:
        """True for Azure ML's MLflow-compatible tracking service."""
        return self.tracking_uri.startswith("azureml:")

    def client(self) -> Any:
        """An ``MlflowClient`` bound to this workspace's tracking and registry URIs."""
        from mlflow import MlflowClient

        self.ensure_local_dirs()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def _initialize_once(self) -> None:
        """Create a new SQLite store's tables under a file lock: MLflow creates them on
        first use, and two processes doing so at once fail ("table ... already exists",
        "duplicate column name")."""
        if urlparse(self.tracking_uri).scheme != "sqlite":
            return
        db = sqlite_path(self.tracking_uri)
        if db is None or str(db) in _INITIALIZED:
            return
        from filelock import FileLock
        from mlflow import MlflowClient

        with FileLock(str(db) + ".init.lock"):
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            client.search_experiments(max_results=1)
            if self.registry_uri == self.tracking_uri:
                client.search_registered_models(max_results=1)
        _INITIALIZED.add(str(db))

    def ensure_local_dirs(self) -> None:
        """Create the folders of a local store on first use."""
        if urlparse(self.tracking_uri).scheme == "sqlite":
            db_path = sqlite_path(self.tracking_uri)
            if db_path is not None:
                db_path.parent.mkdir(parents=True, exist_ok=True)
                self._initialize_once()
        if self.artifact_location and self.artifact_location.startswith("file:"):
            Path(urlparse(self.artifact_location).path).mkdir(parents=True, exist_ok=True)

    def experiment_artifact_location(self, experiment_name: str) -> str | None:
        """Where a new experiment of this workspace keeps its artifacts (None: the server's)."""
        if not self.artifact_location:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment_name)
        return self.artifact_location.rstrip("/") + "/" + safe

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description of the workspace."""
        return {
            "name": self.name,
            "tracking_uri": self.tracking_uri,
            "registry_uri": self.registry_uri,
            "artifact_location": self.artifact_location,
        }


#: SQLite stores whose tables this process has seen created.
_INITIALIZED: set[str] = set()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (None for an in-memory database)."""
    # sqlite:////abs/path.db -> /abs/path.db ; sqlite:///rel.db -> rel.db
    rest = uri[len("sqlite://") :]
    if not rest or rest == "/:memory:":
        return None
    return Path(rest[1:]) if rest.startswith("/") else Path(rest)


def local_workspace(name: str, home: Path) -> Workspace:
    """The embedded default workspace ``name``: a SQLite store under ``home/name``."""
    root = (home / name).resolve()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Workspace(
        name=name,
        tracking_uri=uri,
        registry_uri=uri,
        artifact_location=(root / "artifacts").as_uri(),
        supports_stages=True,
        supports_aliases=True,
        supports_logged_models=True,
        supports_delete=True,
        description="embedded SQLite store",
    )


@dataclass
class Config:
    """The set of workspaces in force and the default one."""

    workspaces: dict[str, Workspace]
    default: str
    path: Path | None = None
    home: Path = field(default_factory=lambda: Path(".lifecycle"))

    def get(self, name: str | None = None) -> Workspace:
        """The workspace called ``name`` (the default one when None).

        Raises:
            WorkspaceError: no workspace has that name.
        """
        key = name or self.default
        try:
            return self.workspaces[key]
        except KeyError:
            known = ", ".join(sorted(self.workspaces)) or "none"
            raise WorkspaceError(
                f"Unknown workspace '{key}'. Known workspaces: {known}"
                + (f" (from {self.path})" if self.path else " (embedded default)")
            ) from None


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file in force: ``explicit``, ``$LIFECYCLE_CONFIG``, or ./lifecycle.yaml."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"Configuration file '{path}' does not exist")
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"Configuration file '{path}' (from ${CONFIG_ENV}) does not exist")
        return path
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the workspaces from ``path`` (or the file found by :func:`find_config_path`).

    With no file: the embedded ``dev`` and ``prod`` workspaces under ``./.lifecycle``
    (or ``$LIFECYCLE_HOME``).

    Raises:
        ConfigError: the file is not valid YAML or names unknown keys.
    """
    cfg_path = find_config_path(path)
    base_dir = cfg_path.parent.resolve() if cfg_path else Path.cwd()
    raw: dict[str, Any] = {}
    if cfg_path:
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"Configuration file '{cfg_path}' is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"Configuration file '{cfg_path}' must be a mapping with a 'workspaces' key"
            )
        raw = loaded
    home_value = raw.get("home") or os.environ.get(HOME_ENV) or ".lifecycle"
    home = Path(home_value)
    if not home.is_absolute():
        home = base_dir / home

    workspaces: dict[str, Workspace] = {n: local_workspace(n, home) for n in DEFAULT_WORKSPACES}
    entries = raw.get("workspaces") or {}
    if not isinstance(entries, dict):
        raise ConfigError(f"'workspaces' in '{cfg_path}' must be a mapping of name to settings")
    for name, settings in entries.items():
        workspaces[str(name)] = _workspace_from_settings(str(name), settings or {}, home, base_dir)
    default = str(raw.get("default") or "dev")
    if default not in workspaces:
        raise ConfigError(
            f"Default workspace '{default}' in '{cfg_path}' is not defined. "
            f"Known workspaces: {', '.join(sorted(workspaces))}"
        )
    return Config(workspaces=workspaces, default=default, path=cfg_path, home=home)


def _workspace_from_settings(
    name: str, settings: dict[str, Any], home: Path, base_dir: Path
) -> Workspace:
    if not isinstance(settings, dict):
        raise ConfigError(f"Workspace '{name}' must be a mapping of settings, got {settings!r}")
    unknown = set(settings) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(
            f"Workspace '{name}' has unknown setting(s) {', '.join(sorted(unknown))}. "
            f"Allowed: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    if "tracking_uri" not in settings:
        base = local_workspace(name, home)
        overrides = {k: v for k, v in settings.items() if k != "registry_uri"}
        return Workspace(**{**base.__dict__, **overrides})
    tracking = _absolutize_uri(str(settings["tracking_uri"]), base_dir)
    registry = _absolutize_uri(str(settings.get("registry_uri") or tracking), base_dir)
    artifact = settings.get("artifact_location")
    if artifact and "://" not in str(artifact) and not str(artifact).startswith("file:"):
        artifact = (base_dir / str(artifact)).resolve().as_uri()
    flags: dict[str, bool | None] = {
        k: settings.get(k) for k in _KNOWN_KEYS if k.startswith("supports_")
    }
    for key, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"Workspace '{name}': '{key}' must be true or false, got {value!r}")
    return Workspace(
        name=name,
        tracking_uri=tracking,
        registry_uri=registry,
        artifact_location=artifact,
        description=str(settings.get("description", "")),
        supports_stages=flags["supports_stages"],
        supports_aliases=flags["supports_aliases"],
        supports_logged_models=flags["supports_logged_models"],
        supports_delete=flags["supports_delete"],
    )


def _absolutize_uri(uri: str, base_dir: Path) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        return f"sqlite:///{(base_dir / rel).resolve()}"
    if "://" not in uri and uri not in ("databricks",) and not uri.startswith("databricks"):
        # A bare path is a file store.
        return (base_dir / uri).resolve().as_uri()
    return uri


def check_reachable(ws: Workspace, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the workspace answers, and a short reason when it does not."""
    scheme = urlparse(ws.tracking_uri).scheme
    if scheme in ("http", "https"):
        import requests

        try:
            resp = requests.get(ws.tracking_uri.rstrip("/") + "/health", timeout=timeout)
            if resp.status_code == 200:
                return True, "ok"
            return False, f"/health answered HTTP {resp.status_code}"
        except requests.RequestException as exc:
            return False, f"{type(exc).__name__}: {exc}".splitlines()[0]
    if scheme == "sqlite":
        db = sqlite_path(ws.tracking_uri)
        if db is None:
            return True, "in-memory"
        parent = db.parent if db.parent.exists() else db.parent.parent
        if db.exists() or os.access(parent, os.W_OK) or not parent.exists():
            return True, "ok" if db.exists() else "created on first use"
        return False, f"cannot write {db.parent}"
    try:
        ws.client().search_experiments(max_results=1)
        return True, "ok"
    except Exception as exc:  # any backend error means "not reachable"; reported, not raised
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0]


_GLOBAL_URI_LOCK = threading.RLock()


@contextlib.contextmanager
def use_workspace(ws: Workspace) -> Iterator[Workspace]:
    """Point MLflow's fluent API (``mlflow.log_*``, ``models:/`` URIs) at ``ws`` for a block.

    MLflow keeps the tracking and registry URIs in process globals; this sets both and
    restores the previous values afterwards.
    """
    import mlflow

    with _GLOBAL_URI_LOCK:
        ws.ensure_local_dirs()
        prev_tracking = mlflow.get_tracking_uri()
        prev_registry = mlflow.get_registry_uri()
        # Under `mlflow run`, MLFLOW_RUN_ID names a run of the launcher's store; fluent calls
        # in another workspace would try to resume it there and fail. (Read the launcher's
        # URI before set_tracking_uri, which also rewrites the environment variable.)
        foreign_run = os.environ.get("MLFLOW_RUN_ID")
        if foreign_run and os.environ.get("MLFLOW_TRACKING_URI") != ws.tracking_uri:
            del os.environ["MLFLOW_RUN_ID"]
        else:
            foreign_run = None
        # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID for child processes: an id of
        # this workspace's store must not outlive the block (an `mlflow run` started later
        # would look for it in another store).
        prev_experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
        mlflow.set_tracking_uri(ws.tracking_uri)
        mlflow.set_registry_uri(ws.registry_uri)
        try:
            yield ws
        finally:
            if foreign_run:
                os.environ["MLFLOW_RUN_ID"] = foreign_run
            if prev_experiment is None:
                os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
            else:
                os.environ["MLFLOW_EXPERIMENT_ID"] = prev_experiment
            mlflow.set_tracking_uri(prev_tracking)
            mlflow.set_registry_uri(prev_registry)


def get_or_create_experiment(ws: Workspace, name: str) -> str:
    """The id of experiment ``name`` in ``ws``, created (with the workspace's artifact location)
    if missing."""
    client = ws.client()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    try:
        return str(
            client.create_experiment(name, artifact_location=ws.experiment_artifact_location(name))
        )
    except Exception:
        # Another process may have created it between the lookup and the create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


@contextlib.contextmanager
def quiet_mlflow_warnings() -> Iterator[None]:
    """Silence MLflow's stage-deprecation FutureWarning (users never see it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*[Ss]tage.*deprecated.*")
        yield


@contextlib.contextmanager
def quiet_mlflow_progress() -> Iterator[None]:
    """Keep MLflow from drawing artifact progress bars on stderr (library code stays quiet)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


_BOUNDED_LOCK = threading.Lock()
_bounded_users = 0
_bounded_saved: dict[str, str | None] = {}


@contextlib.contextmanager
def one_http_attempt(timeout: float = 15.0) -> Iterator[None]:
    """MLflow HTTP calls made inside try once, for at most ``timeout`` seconds.

    For bookkeeping a caller can skip or retry later (a server's registry check and
    deployment record), instead of MLflow's default retries, which last minutes against
    a registry that is down. Overlapping uses (several threads) share one setting.
    """
    global _bounded_users, _bounded_saved
    bounded = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout))),
    }
    with _BOUNDED_LOCK:
        if _bounded_users == 0:
            _bounded_saved = {k: os.environ.get(k) for k in bounded}
            os.environ.update(bounded)
        _bounded_users += 1
    try:
        yield
    finally:
        with _BOUNDED_LOCK:
            _bounded_users -= 1
            if _bounded_users == 0:
                for k, v in _bounded_saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


@contextlib.contextmanager
def same_workspaces_env(config: Config | None = None) -> Iterator[None]:
    """While active, child processes started in another folder resolve workspace names as
    this process does: ``$LIFECYCLE_CONFIG`` names the configuration file in force (made
    absolute), or ``$LIFECYCLE_HOME`` the embedded workspaces' folder."""
    cfg = config or load_config()
    saved = {k: os.environ.get(k) for k in (CONFIG_ENV, HOME_ENV)}
    if cfg.path is not None:
        os.environ[CONFIG_ENV] = str(Path(cfg.path).resolve())
    else:
        os.environ[HOME_ENV] = str(Path(cfg.home).resolve())
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
