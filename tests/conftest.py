"""Shared fixtures: real SQLite workspaces under tmp_path, a real ``mlflow server``, models.

No fixture mocks MLflow: every workspace is a real store on disk or a real server process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lifecycle.base.workspaces import Config, Workspace, load_config
from tests.support.mlflow_server import MlflowServer


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for var in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        # mlflow.set_experiment exports it for subprocesses: a test calling it directly must
        # not send a later test's `mlflow run` to an experiment id of its own store.
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "LIFECYCLE_CONFIG",
        "LIFECYCLE_HOME",
        "LIFECYCLE_ENV_MANAGER",  # --env-manager sets it for the processes a command starts
    ):
        monkeypatch.delenv(var, raising=False)
    # Warm-start pins and fast-path verdicts: one fresh cache per test, never ~/.cache.
    monkeypatch.setenv("LIFECYCLE_CACHE_DIR", str(tmp_path_factory.mktemp("lifecycle-cache")))
    monkeypatch.setenv("LIFECYCLE_USER", "pytest")
    # No blanket consent to unpickle (set, so that a CLI run in this process that sets it
    # through --trust-pickle is undone after the test); tests of model directories they
    # wrote themselves consent with the ``trusted_pickles`` fixture.
    monkeypatch.setenv("LIFECYCLE_TRUST_PICKLE", "0")
    monkeypatch.setenv("LIFECYCLE_ALLOW_RESTRICTED", "0")  # likewise --allow-restricted
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def trusted_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consent to unpickling model directories (``--trust-pickle``): the test wrote them."""
    monkeypatch.setenv("LIFECYCLE_TRUST_PICKLE", "1")


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory: the embedded dev/prod workspaces live in ./.lifecycle."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def config(project_dir: Path) -> Config:
    """The embedded default configuration (dev and prod SQLite stores) in project_dir."""
    return load_config()


@pytest.fixture
def dev(config: Config) -> Workspace:
    """The embedded ``dev`` workspace."""
    return config.get("dev")


@pytest.fixture
def prod(config: Config) -> Workspace:
    """The embedded ``prod`` workspace."""
    return config.get("prod")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 (own process group), shared by the session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote(mlflow_server: MlflowServer) -> Workspace:
    """The real server as a workspace named ``remote``."""
    return Workspace(name="remote", tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


@pytest.fixture
def config_with_remote(project_dir: Path, mlflow_server: MlflowServer) -> Path:
    """A lifecycle.yaml in project_dir: embedded dev/prod plus ``remote`` (the real server)."""
    path = project_dir / "lifecycle.yaml"
    path.write_text(
        yaml.safe_dump({"workspaces": {"remote": {"tracking_uri": mlflow_server.url}}}),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def breast_cancer() -> tuple[pd.DataFrame, pd.Series]:
    """scikit-learn's breast-cancer data as a DataFrame with safe column names, and labels."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    X = data.data.copy()
    X.columns = [c.replace(" ", "_") for c in X.columns]
    return X, data.target.rename("target")


@pytest.fixture(scope="session")
def fitted_logreg(breast_cancer: tuple[pd.DataFrame, pd.Series]):  # type: ignore[no-untyped-def]
    """A scikit-learn Pipeline(StandardScaler, LogisticRegression) fitted on breast_cancer."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = breast_cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


@pytest.fixture(scope="session")
def mlflow_server2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A second real ``mlflow server`` (for promotions between two remote servers)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server2"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote2(mlflow_server2: MlflowServer) -> Workspace:
    """The second real server as a workspace named ``remote2``."""
    return Workspace(
        name="remote2", tracking_uri=mlflow_server2.url, registry_uri=mlflow_server2.url
    )


@pytest.fixture(scope="session")
def automl_env() -> Path:
    """AutoML's own environment (``lifecycle env prepare`` of any imported AutoML model),
    built on the first run on a machine (~2 min, ~1.4 GB), then found in the cache."""
    from lifecycle.base.envs import automl_spec, prepare_env

    return prepare_env(automl_spec())
