"""The six scenarios end to end, through the CLI as a user runs them.

{Designer, notebook, AutoML} x {real-time, batch}: the origin artifact -> ``lifecycle import``
into dev (embedded SQLite) -> ``lifecycle promote`` behind gates into prod (a real
``mlflow server``) -> real-time: ``lifecycle serve`` prod's Production version and query it
with MLflow's and Azure ML's payloads; batch: ``lifecycle score`` a folder of CSVs and check
every row -> the Azure ML spec for that target, loaded back by azure-ai-ml's own loaders.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from click.testing import CliRunner

from lifecycle.cli import cli
from lifecycle.cli.background import start_background
from tests.support import origins
from tests.support.mlflow_server import MlflowServer


@dataclass
class Promoted:
    name: str
    origin: str
    dev_version: str
    prod_version: str
    holdout: pd.DataFrame
    expected: Any
    config: Path
    root: Path


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # show what the command printed instead
        raise AssertionError(f"not JSON: {text[:2000]!r}") from exc


def _cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, (
        f"lifecycle {' '.join(args)} -> {result.exit_code}: {result.stderr}{result.output}"
    )
    return result.stdout


def _make_origin(origin: str, root: Path) -> tuple[Path, list[str], pd.DataFrame, Any]:
    """The artifact, extra import args, held-out features and the origin's own predictions."""
    if origin == "notebook":
        built = origins.build_notebook(root / "nb", "joblib")
        return (
            built.path,
            ["--sample", str(built.sample_csv), "--target", "target"],
            built.holdout,
            built.expected,
        )
    real = Path(__file__).resolve().parents[1] / "fixtures" / "real"
    if origin == "designer":
        # A real Train Model output (Designer's own modules), zipped as downloaded.
        case = real / "designer" / "binary_logreg"
        folder = case / "trained_model_outputs"
        zipped = shutil.make_archive(
            str(root / "designer"), "zip", root_dir=folder.parent, base_dir=folder.name
        )
        holdout = pd.read_parquet(case / "holdout.parquet")
        holdout = holdout.astype(
            {c: object for c in holdout.columns if str(holdout[c].dtype) == "category"}
        )
        return Path(zipped), [], holdout, pd.read_parquet(case / "expected.parquet")
    # A real AutoML "download best model" zip (AutoML's own classes), run in its environment.
    case = real / "automl" / "classification_lightgbm"
    expected = pd.read_parquet(case / "expected.parquet")["predict"].to_numpy()
    return case / "automl_best_model.zip", [], pd.read_csv(case / "holdout.csv"), expected


@pytest.fixture(scope="module")
def prod_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = MlflowServer(tmp_path_factory.mktemp("prod-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["notebook", "designer", "automl"])
def promoted(
    request: pytest.FixtureRequest,
    prod_server: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Promoted:
    origin: str = request.param
    if origin == "automl":
        request.getfixturevalue("automl_env")
    root = tmp_path_factory.mktemp(f"accept-{origin}")
    config = root / "lifecycle.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "home": str(root / ".lifecycle"),
                "workspaces": {"prod": {"tracking_uri": prod_server.url}},
            }
        )
    )
    path, extra, holdout, expected = _make_origin(origin, root)
    name = f"accept-{origin}"
    out = _cli(
        config, "import", origin, str(path), "--name", name, "--trust-pickle", "-w", "dev", *extra
    )
    match = re.search(rf"{name} version (\d+)", out)
    assert match, out
    dev_version = match.group(1)
    _cli(config, "transition", name, dev_version, "staging", "-w", "dev")
    promote_out = _json(
        _cli(
            config, "promote", name, "--stage", "Staging", "--from", "dev", "--to", "prod", "--json"
        )
    )
    assert promote_out["passed"] is True
    assert any(g["kind"] == "smoke" or "smoke" in g["gate"] for g in promote_out["gates"])
    target = promote_out["target"]
    assert target["stage"] == "Production" and target["workspace"] == "prod"
    return Promoted(
        name, origin, dev_version, str(target["version"]), holdout, expected, config, root
    )


def _expected_frame(p: Promoted) -> pd.DataFrame:
    if isinstance(p.expected, pd.DataFrame):
        return p.expected.reset_index(drop=True)
    return pd.DataFrame({"prediction": np.asarray(p.expected)})


def test_real_time(promoted: Promoted) -> None:
    rows = promoted.holdout.head(8)
    split = json.loads(rows.to_json(orient="split", index=False))
    with start_background(
        f"models:/{promoted.name}/Production",
        config_path=promoted.config,
        workspace="prod",
        log_path=promoted.root / "serve.log",
    ) as server:
        mlflow_resp = requests.post(
            server.url + "/invocations", json={"dataframe_split": split}, timeout=30
        )
        azure_resp = requests.post(
            server.url + "/invocations",
            json={"input_data": {**split, "index": list(range(len(rows)))}},
            timeout=30,
        )
        version = requests.get(server.url + "/version", timeout=10).json()
    assert mlflow_resp.status_code == 200, mlflow_resp.text
    assert azure_resp.status_code == 200, azure_resp.text
    assert str(version["version"]) == promoted.prod_version
    expected = _expected_frame(promoted).head(8)
    mlflow_preds = mlflow_resp.json()["predictions"]
    azure_preds = azure_resp.json()  # Azure's MLflow server answers without a wrapper
    assert len(mlflow_preds) == len(azure_preds) == 8
    if isinstance(mlflow_preds[0], dict):  # a DataFrame answer (Designer's scored columns)
        got = pd.DataFrame(mlflow_preds)
        pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
        assert pd.DataFrame(azure_preds)[expected.columns].equals(got[expected.columns])
    else:
        assert list(mlflow_preds) == list(expected["prediction"])
        assert list(azure_preds) == list(mlflow_preds)


def test_batch(promoted: Promoted, tmp_path: Path) -> None:
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    holdout = promoted.holdout.reset_index(drop=True)
    parts = np.array_split(np.arange(len(holdout)), 3)
    for i, idx in enumerate(parts):
        holdout.iloc[idx].assign(row_id=idx).to_csv(in_dir / f"part-{i}.csv", index=False)
    out = tmp_path / "scored.csv"
    summary = _json(
        _cli(
            promoted.config,
            "score",
            f"models:/{promoted.name}/Production",
            str(in_dir),
            "--output",
            str(out),
            "--keep-columns",
            "row_id",
            "-w",
            "prod",
            "--json",
        )
    )
    assert summary["rows_read"] == summary["rows_scored"] == len(holdout)
    assert summary["rows_rejected"] == 0
    scored = pd.read_csv(out).sort_values("row_id").reset_index(drop=True)
    assert list(scored["row_id"]) == list(range(len(holdout)))  # every row, once
    expected = _expected_frame(promoted)
    for col in expected.columns:
        if pd.api.types.is_float_dtype(expected[col]):
            np.testing.assert_allclose(scored[col], expected[col], rtol=1e-9)
        else:
            assert [str(v) for v in scored[col]] == [str(v) for v in expected[col]]


@pytest.mark.parametrize("target", ["online", "batch"])
def test_azure_spec(promoted: Promoted, target: str, tmp_path: Path) -> None:
    from azure.ai.ml import load_model

    out = tmp_path / target
    args = ["deploy", f"azure-{target}", promoted.name, "--version", promoted.prod_version]
    args += ["--endpoint", f"{promoted.origin}-{target}", "--out", str(out), "-w", "prod", "--json"]
    if target == "batch":
        args += ["--compute", "cpu-cluster"]
    result = _json(_cli(promoted.config, *args))
    assert result.get("applied") is False
    model_yml = next(out.rglob("model.yml"))
    model = load_model(source=model_yml)
    assert model.type == "mlflow_model"
    if target == "online":
        from azure.ai.ml import load_online_deployment

        deployment = load_online_deployment(source=next(out.rglob("*deployment*.yml")))
        assert deployment.environment is None and deployment.code_configuration is None
    else:
        from azure.ai.ml import load_batch_deployment

        deployment = load_batch_deployment(source=next(out.rglob("deployment.yml")))
        assert deployment.compute in ("cpu-cluster", "azureml:cpu-cluster")
