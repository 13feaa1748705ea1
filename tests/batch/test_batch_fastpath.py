"""The lean scoring path (batch.fastpath): equal to pyfunc.predict, checked, and refused when not.

Real skops models on disk, real CSV files, a real SQLite workspace; the verdict cache lives
under tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from batch.engine import score
from batch.fastpath import VERDICT_KIND
from lifecycle.base.digest import model_digest
from lifecycle.base.lean import fastpath_verdict
from lifecycle.base.workspaces import Workspace, local_workspace
from tests.support.batch_models import save_code_model, save_logreg, scoring_frame, training_frame

# These tests score model directories they wrote themselves: consent to unpickle them.
pytestmark = pytest.mark.usefixtures("trusted_pickles")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh verdict cache per test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIFECYCLE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return local_workspace("dev", tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LogisticRegression (3 doubles + 1 long), a random forest, and a model that answers
    differently on a NumPy matrix (its ColumnTransformer selects columns by name)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("m")
    X, y = training_frame()
    rf = RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(X, y)
    mlflow.sklearn.save_model(
        rf,
        str(root / "rf"),
        signature=infer_signature(X, rf.predict(X)),
        input_example=X.head(3),  # checked against pyfunc too
        pip_requirements=["scikit-learn"],
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    by_name = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), ["f0", "f1"])]), LogisticRegression()
    ).fit(X, y)
    mlflow.sklearn.save_model(
        by_name,
        str(root / "by_name"),
        signature=infer_signature(X, by_name.predict(X)),
        pip_requirements=["scikit-learn"],
    )
    return {"logreg": save_logreg(root / "logreg"), "rf": root / "rf", "by_name": root / "by_name"}


def _random_rows(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = scoring_frame(rows, seed)
    df[["f0", "f1", "f2"]] = np.round(rng.normal(scale=3, size=(rows, 3)), 4)
    return df


@pytest.mark.parametrize("name", ["logreg", "rf"])
def test_lean_path_equals_pyfunc_in_input_order_with_threads(
    ws: Workspace, models: dict[str, Path], tmp_path: Path, name: str
) -> None:
    df = _random_rows(3000, seed=7)
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    m = score(ws, str(models[name]), src, out, keep_columns=["id"], workers=3, chunk_rows=170)

    assert m.fast_path is not None and m.fast_path["used"] is True
    assert m.fast_path["verified"] == "pyfunc.predict" and m.fast_path["rows_checked"] > 256
    assert m.run_id and ws.client().get_run(m.run_id).data.metrics["rows_scored"] == 3000
    result = pd.read_csv(out)
    assert result["id"].tolist() == df["id"].tolist(), "threads keep input order"
    expected = mlflow.pyfunc.load_model(str(models[name])).predict(df[["f0", "f1", "f2", "n"]])
    np.testing.assert_array_equal(result["prediction"].to_numpy(), np.asarray(expected))

    # The agreement is cached by model digest: the next run trusts it and checks nothing.
    verdict = fastpath_verdict(model_digest(models[name]), VERDICT_KIND)
    assert verdict is not None and verdict["agreed"] is True
    out2 = tmp_path / "again.csv"
    m2 = score(ws, str(models[name]), src, out2, keep_columns=["id"], workers=2, record=False)
    assert m2.fast_path == {**m.fast_path, "verified": "cached verdict", "rows_checked": 0}
    assert out2.read_bytes() == out.read_bytes()


def test_lean_path_multi_file_rejects_and_source_rows(
    ws: Workspace, models: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    a = _random_rows(50, seed=1)
    a["n"] = a["n"].astype(str)
    a.loc[[3, 40], "n"] = ["x", "2.5"]  # rejected by coercion
    a.loc[10, "f1"] = np.nan  # a missing double: the model itself refuses the row
    a.to_csv(tmp_path / "in" / "a.csv", index=False)
    b = _random_rows(30, seed=2)
    b.to_parquet(tmp_path / "in" / "b.parquet", index=False)
    out = tmp_path / "all.csv"
    m = score(
        ws,
        str(models["logreg"]),
        tmp_path / "in",
        out,
        keep_columns=["id"],
        workers=2,
        chunk_rows=16,
        max_error_rate=0.1,
        record=False,
    )
    assert m.fast_path is not None and m.fast_path["used"] is True
    assert (m.rows_read, m.rows_scored, m.rows_rejected) == (80, 77, 3)
    result = pd.read_csv(out)
    assert list(result.columns) == ["source_file", "source_row", "id", "prediction"]
    kept_a = [i for i in range(50) if i not in (3, 10, 40)]
    assert result["source_row"].tolist() == [i + 1 for i in kept_a] + list(range(1, 31))
    assert result["source_file"].tolist() == ["a.csv"] * 47 + ["b.parquet"] * 30
    rejects = pd.read_csv(tmp_path / "all.csv.rejects.csv", keep_default_na=False)
    assert rejects["row_number"].tolist() == [4, 11, 41]
    assert rejects["reason"].str.startswith("model error:").tolist() == [False, True, False]
    pyfunc = mlflow.pyfunc.load_model(str(models["logreg"]))
    frame = pd.concat([a.drop(index=[3, 10, 40]), b])[["f0", "f1", "f2", "n"]].astype(
        {"n": "int64"}
    )
    np.testing.assert_array_equal(result["prediction"], pyfunc.predict(frame))


def test_models_not_eligible_go_through_pyfunc(
    ws: Workspace, models: dict[str, Path], tmp_path: Path
) -> None:
    code = save_code_model(tmp_path / "code")
    src = tmp_path / "in.csv"
    scoring_frame(40).to_csv(src, index=False)
    m = score(ws, str(code), src, tmp_path / "o.csv", workers=2, record=False)
    assert m.fast_path is not None and m.fast_path["used"] is False
    assert "not mlflow.sklearn" in m.fast_path["reason"]
    assert m.rows_scored == 40


def test_a_disagreeing_lean_path_is_caught_and_rescored_through_pyfunc(
    ws: Workspace, models: dict[str, Path], tmp_path: Path
) -> None:
    # Its ColumnTransformer selects columns by name: on a NumPy matrix it fails every row,
    # through pyfunc (a DataFrame) it predicts. The check must catch it before the rename.
    df = _random_rows(60, seed=3)
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    m = score(ws, str(models["by_name"]), src, out, keep_columns=["id"], workers=2, record=False)
    assert m.fast_path is not None and m.fast_path["used"] is False
    assert "model errors differ" in m.fast_path["reason"]
    assert (m.rows_scored, m.rows_rejected) == (60, 0)
    expected = mlflow.pyfunc.load_model(str(models["by_name"])).predict(df)
    np.testing.assert_array_equal(pd.read_csv(out)["prediction"], expected)
    assert not (tmp_path / "out.csv.rejects.csv").exists()

    # The disagreement is remembered: the next run goes straight to pyfunc.
    verdict = fastpath_verdict(model_digest(models["by_name"]), VERDICT_KIND)
    assert verdict is not None and verdict["agreed"] is False
    m2 = score(ws, str(models["by_name"]), src, tmp_path / "o2.csv", workers=1, record=False)
    assert m2.fast_path is not None and m2.fast_path["used"] is False
    assert m2.fast_path["reason"].startswith("recorded disagreement with pyfunc")
    manifest = json.loads((tmp_path / "o2.csv.manifest.json").read_text())
    assert manifest["fast_path"]["used"] is False


def test_killed_lean_run_resumes_to_byte_identical_output(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    # Many trees: slow enough per chunk to be killed mid-file, still on the lean path.
    X, y = training_frame()
    rf = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(X, y)
    model = tmp_path / "slow_rf"
    mlflow.sklearn.save_model(
        rf,
        str(model),
        signature=infer_signature(X, rf.predict(X)),
        pip_requirements=["scikit-learn"],
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )
    df = _random_rows(80_000, seed=5)
    df["n"] = df["n"].astype(str)
    df.loc[[77, 70_000], "n"] = ["bad", "1.5"]  # a reject before and after the kill
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    cmd = [
        sys.executable, "-m", "lifecycle", "score", str(model), str(src), "-o",
        str(tmp_path / "out.csv"), "--chunk-rows", "1000", "--keep-columns", "id",
        "--max-error-rate", "0.1", "--workers", "2",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "LIFECYCLE_CACHE_DIR": str(tmp_path / "cache"),
    }
    checkpoint = tmp_path / ".out.csv.checkpoint.json"
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline, seq = time.time() + 120, 0
        while time.time() < deadline and proc.poll() is None and seq < 1:
            try:
                seq = json.loads(checkpoint.read_text())["seq"]
            except (OSError, ValueError):
                seq = 0
            time.sleep(0.02)
        assert proc.poll() is None and seq >= 1, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (tmp_path / "out.csv").exists()

    done = subprocess.run(
        [*cmd, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["resumed"] is True and manifest["fast_path"]["used"] is True
    assert (manifest["rows_read"], manifest["rows_rejected"]) == (80_000, 2)

    # Reference: one uninterrupted run (in process, lean path trusted from the cache).
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    code_free = tmp_path / "ref.csv"
    ref = score(ws, str(model), src, code_free, keep_columns=["id"], chunk_rows=1000,
                max_error_rate=0.1, workers=1, record=False)  # fmt: skip
    assert ref.fast_path is not None and ref.fast_path["verified"] == "cached verdict"
    assert (tmp_path / "out.csv").read_bytes() == code_free.read_bytes()
    assert (tmp_path / "out.csv.rejects.csv").read_bytes() == (
        tmp_path / "ref.csv.rejects.csv"
    ).read_bytes()


def test_lean_load_refusal_rescores_through_pyfunc_at_once(ws: Workspace, tmp_path: Path) -> None:
    # Signature columns in another order than the estimator was fitted on: a matrix in
    # signature order would be silently wrong, so the lean load refuses and pyfunc decides
    # (here: sklearn refuses every row, as it does through pyfunc).
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = training_frame()
    model = tmp_path / "reordered"
    est = LogisticRegression().fit(X, y)
    mlflow.sklearn.save_model(
        est,
        str(model),
        signature=infer_signature(X[["n", "f2", "f0", "f1"]], est.predict(X)),
        pip_requirements=["scikit-learn"],
    )
    src = tmp_path / "in.csv"
    scoring_frame(30).to_csv(src, index=False)
    m = score(ws, str(model), src, tmp_path / "o.csv", max_error_rate=1.0, record=False)
    assert m.fast_path is not None and m.fast_path["used"] is False
    assert "feature names" in m.fast_path["reason"]
    assert (m.rows_read, m.rows_rejected) == (30, 30)
    rejects = pd.read_csv(tmp_path / "o.csv.rejects.csv")
    assert rejects["reason"].str.startswith("model error:").all()


LEAN_RUN_WITHOUT_MLFLOW = """
import json, sys
from batch.engine import score
from lifecycle.base.workspaces import local_workspace

seen = []
ws = local_workspace("dev", __import__("pathlib").Path(sys.argv[1]))
m = score(ws, sys.argv[2], sys.argv[3], sys.argv[4], keep_columns=["id"], workers=2,
          chunk_rows=200, progress=lambda p: seen.append("mlflow" in sys.modules))
print(json.dumps({"chunks": len(seen), "mlflow_while_scoring": any(seen),
                  "mlflow_after": "mlflow" in sys.modules, "run_id": m.run_id,
                  "verified": m.fast_path["verified"]}))
"""


@pytest.mark.parametrize("uri", ["directory", "models:/lean/1"])
def test_lean_path_scores_without_mlflow_in_memory(
    models: dict[str, Path], tmp_path: Path, uri: str
) -> None:
    """MLflow (~110 MB of modules) is imported only after the last chunk: for the check
    against pyfunc and the run record. That keeps the peak memory of a big run down. A
    registry URI is resolved and downloaded by a child process for the same reason."""
    import subprocess
    import sys

    from lifecycle.registry.versions import log_and_register

    model = str(models["logreg"])
    if uri.startswith("models:/"):
        ws = local_workspace("dev", tmp_path / "ws")
        log_and_register(ws, models["logreg"], "lean", experiment="import", trust_pickle=True)
        model = uri
    df = _random_rows(2000, seed=3)
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    proc = subprocess.run(
        [sys.executable, "-c", LEAN_RUN_WITHOUT_MLFLOW, str(tmp_path / "ws"),
         model, str(src), str(tmp_path / "out.csv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["chunks"] >= 10 and got["mlflow_while_scoring"] is False
    assert got["verified"] == "pyfunc.predict", "the check against pyfunc still ran"
    assert got["mlflow_after"] is True and got["run_id"], "and the run was recorded"
