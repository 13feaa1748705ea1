"""Consent to unpickle, recorded on the version and respected by every command that loads it
(issue #16 item 2). Real SQLite workspaces, the real CLI; the refused versions hold a pickle
that would run ``touch MARKER`` when loaded, and each test asserts it never ran."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from lifecycle.base.tags import PICKLE_CONSENT_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import scoring_frame, training_frame
from tests.support.mlflow_server import free_port
from tests.support.procs import lifecycle


def save_logreg(path: Path) -> Path:
    """A LogisticRegression saved by MLflow with cloudpickle (MLflow's default is skops, which
    needs no consent): loading it unpickles ``model.pkl``."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame()
    model = LogisticRegression().fit(X, y)
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=infer_signature(X, model.predict(X)),
        pip_requirements=["scikit-learn", "pandas"],
    )
    return path


class _Touch:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def gadget(tmp_path: Path) -> tuple[Path, Path]:
    """A real pickled MLflow sklearn model whose ``model.pkl`` is a gadget, and its marker."""
    model = save_logreg(tmp_path / "gadget")
    pkl = model / "model.pkl"
    assert pkl.is_file()
    marker = tmp_path / "pwned"
    pkl.write_bytes(pickle.dumps(_Touch(marker)))
    return model, marker


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _one_line_refusal(result: Result, must: str) -> str:
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert must in lines[0], lines[0]
    return lines[0]


def test_a_version_without_consent_is_refused_by_every_command_that_loads_it(
    dev: Workspace, prod: Workspace, project_dir: Path, gadget: tuple[Path, Path]
) -> None:
    model, marker = gadget
    log_and_register(dev, model, "gadget", experiment="t")  # registered outside an import
    scoring_frame(20).to_csv(project_dir / "in.csv", index=False)
    how = "lifecycle trust gadget 1 -w dev"
    uri = "models:/gadget/1"
    commands = {
        "score": ["score", uri, "in.csv", "--output", "out.csv", "-w", "dev"],
        "baseline": ["baseline", uri, "--data", "in.csv", "-w", "dev"],
        "promote": ["promote", "gadget", "--version", "1", "--from", "dev", "--to", "prod"],
        "azure-online": [
            *("deploy", "azure-online", "gadget", "--version", "1"),
            *("--endpoint", "e", "--out", "specs", "-w", "dev"),
        ],
    }
    for what, args in commands.items():
        line = _one_line_refusal(_run(*args), how)
        assert "serialized with cloudpickle" in line, (what, line)
        assert not marker.exists(), f"{what} ran the pickle"
    # The server in a real process (a server that loaded it would not return).
    served = lifecycle(project_dir, "serve", uri, "-w", "dev", "--port", str(free_port()))
    assert served.returncode == 1, served.stderr
    assert how in served.stderr and not marker.exists()
    assert not (project_dir / "out.csv").exists()
    assert not (project_dir / "specs").exists()
    assert not prod.client().search_registered_models(), "promote registered something"
    # Consent for this run only: the flag lets score load it (and the gadget runs, which is
    # what consent means), without recording anything on the version.
    _run(*commands["score"], "--trust-pickle")
    assert marker.exists()
    assert PICKLE_CONSENT_TAG not in (dev.client().get_model_version("gadget", "1").tags or {})


def test_trust_records_consent_that_every_load_respects_and_revoke_removes_it(
    dev: Workspace, prod: Workspace, project_dir: Path, tmp_path: Path
) -> None:
    model = save_logreg(tmp_path / "good")
    log_and_register(dev, model, "good", experiment="t")
    scoring_frame(30).to_csv(project_dir / "in.csv", index=False)
    score = ["score", "models:/good/1", "in.csv", "--output", "out.csv", "-w", "dev"]
    _one_line_refusal(_run(*score), "lifecycle trust good 1 -w dev")

    trusted = _run("trust", "good", "1", "-w", "dev")
    assert trusted.exit_code == 0, trusted.output
    assert "recorded your consent to unpickle good v1 in 'dev'" in trusted.output
    tag = json.loads(dev.client().get_model_version("good", "1").tags[PICKLE_CONSENT_TAG])
    assert tag["by"] == "pytest" and tag["how"] == "lifecycle trust"
    again = _run("trust", "good", "1", "-w", "dev")
    assert "already recorded" in again.output

    ok = _run(*score)
    assert ok.exit_code == 0, ok.output
    assert len(pd.read_csv(project_dir / "out.csv")) == 30
    history = _run("history", "good", "-w", "dev", "--json")
    assert "trust" in [e["action"] for e in json.loads(history.output)]

    # A promotion gates the same bytes and carries the consent to the copy.
    promoted = _run("promote", "good", "--version", "1", "--from", "dev", "--to", "prod")
    assert promoted.exit_code == 0, promoted.output
    copy = prod.client().get_model_version("good", "1")
    assert (
        copy.tags[PICKLE_CONSENT_TAG]
        == dev.client().get_model_version("good", "1").tags[PICKLE_CONSENT_TAG]
    )
    ok_prod = _run("score", "models:/good/1", "in.csv", "--output", "p.csv", "-w", "prod")
    assert ok_prod.exit_code == 0, ok_prod.output

    revoked = _run("trust", "good", "1", "-w", "dev", "--revoke")
    assert "revoked the consent to unpickle good v1 in 'dev'" in revoked.output
    (project_dir / "out.csv").unlink()
    _one_line_refusal(_run(*score), "lifecycle trust good 1 -w dev")
    assert not (project_dir / "out.csv").exists()
    history = json.loads(_run("history", "good", "-w", "dev", "--json").output)
    assert "distrust" in [e["action"] for e in history]


def test_trust_names_a_bad_version_in_one_line(dev: Workspace, project_dir: Path) -> None:
    _one_line_refusal(_run("trust", "nosuch", "1", "-w", "dev"), "nosuch")
    _one_line_refusal(_run("trust", "nosuch", "one", "-w", "dev"), "Invalid version 'one'")


def test_import_with_trust_pickle_records_consent_and_a_skops_version_needs_none(
    dev: Workspace, project_dir: Path, tmp_path: Path
) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from tests.support.serving_models import numeric_frame

    pickled = save_logreg(tmp_path / "pickled")
    imported = _run("import", "notebook", str(pickled), "--name", "imp", "--trust-pickle")
    assert imported.exit_code == 0, imported.output
    tag = json.loads(dev.client().get_model_version("imp", "1").tags[PICKLE_CONSENT_TAG])
    assert tag["how"] == "register --trust-pickle"

    X = numeric_frame(100)
    skops_dir = tmp_path / "skops"
    mlflow.sklearn.save_model(
        LogisticRegression().fit(X, X["f0"] > 0),
        str(skops_dir),
        serialization_format="skops",
        input_example=X.head(2),
        skops_trusted_types=[],
    )
    log_and_register(dev, skops_dir, "safe", experiment="t")
    assert PICKLE_CONSENT_TAG not in (dev.client().get_model_version("safe", "1").tags or {})
    X.head(10).to_csv(project_dir / "x.csv", index=False)
    ok = _run("score", "models:/safe/1", "x.csv", "--output", "o.csv", "-w", "dev")
    assert ok.exit_code == 0, ok.output


def test_a_model_directory_loads_only_with_trust_pickle(
    project_dir: Path, gadget: tuple[Path, Path]
) -> None:
    model, marker = gadget
    scoring_frame(5).to_csv(project_dir / "in.csv", index=False)
    args = ["score", str(model), "in.csv", "--output", "out.csv"]
    _one_line_refusal(_run(*args), "pass --trust-pickle if you trust its origin")
    assert not marker.exists() and not (project_dir / "out.csv").exists()
    _run(*args, "--trust-pickle")
    assert marker.exists()  # consent given: the file was loaded (and ran)


def test_a_warm_start_cached_under_trust_pickle_does_not_carry_the_consent(
    dev: Workspace, project_dir: Path, tmp_path: Path
) -> None:
    """A server started with --trust-pickle caches the version for warm starts; the next start
    without the flag must not load that cache as if consent were recorded."""
    from lifecycle.cli.background import start_background

    log_and_register(dev, save_logreg(tmp_path / "m"), "warm", experiment="t")
    server = start_background(
        "models:/warm/1", workspace="dev", cwd=project_dir, extra_args=["--trust-pickle"]
    )
    assert server.stop(timeout=60) == 0
    port = str(free_port())
    again = lifecycle(project_dir, "serve", "models:/warm/1", "-w", "dev", "--port", port)
    assert again.returncode == 1
    assert "lifecycle trust warm 1 -w dev" in again.stderr, again.stderr
