"""The local batch engine on real models, real SQLite workspaces and real files."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from batch.engine import score
from lifecycle.base.deployments import list_deployments
from lifecycle.base.errors import InvalidArgumentError, SchemaError, ScoringError
from lifecycle.base.workspaces import Workspace, local_workspace
from lifecycle.registry.versions import log_and_register
from tests.support.batch_models import save_code_model, save_logreg, scoring_frame

# These tests score model directories they wrote themselves: consent to unpickle them.
pytestmark = pytest.mark.usefixtures("trusted_pickles")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A module-wide embedded workspace."""
    return local_workspace("dev", tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def logreg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_logreg(tmp_path_factory.mktemp("m") / "logreg")


@pytest.fixture(scope="module")
def registered(ws: Workspace, logreg_dir: Path) -> str:
    reg = log_and_register(ws, logreg_dir, "churn", experiment="import", trust_pickle=True)
    return f"models:/churn/{reg.version}"


@pytest.fixture(scope="module")
def code_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_code_model(tmp_path_factory.mktemp("m") / "code")


def _expected(model_dir: Path | str, df: pd.DataFrame) -> np.ndarray:
    model = mlflow.pyfunc.load_model(str(model_dir))
    return np.asarray(model.predict(df[["f0", "f1", "f2", "n"]]))


def test_predictions_equal_pyfunc_in_input_order_with_workers(
    ws: Workspace, registered: str, logreg_dir: Path, tmp_path: Path
) -> None:
    df = scoring_frame(2500)
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    manifest = score(ws, registered, src, out, keep_columns=["id"], workers=2, chunk_rows=300)

    result = pd.read_csv(out)
    assert list(result.columns) == ["id", "prediction"]
    assert result["id"].tolist() == df["id"].tolist()
    np.testing.assert_array_equal(result["prediction"].to_numpy(), _expected(logreg_dir, df))
    assert (manifest.rows_read, manifest.rows_scored, manifest.rows_rejected) == (2500, 2500, 0)
    assert manifest.chunks >= 5 and manifest.workers == 2
    assert manifest.model_name == "churn" and manifest.model_version == "1"

    on_disk = json.loads((tmp_path / "out.csv.manifest.json").read_text())
    assert on_disk["inputs"][0]["size"] == src.stat().st_size
    assert on_disk["inputs"][0]["sha256"].startswith("sha256:") and on_disk["rows_scored"] == 2500
    assert "mlflow" in on_disk["packages"]
    assert not list(tmp_path.glob(".out.csv*")), "no partial or checkpoint left behind"

    assert (
        on_disk["inputs"][0]["sha256"] == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    )

    run = ws.client().get_run(manifest.run_id)
    assert run.info.status == "FINISHED"
    started = datetime.fromisoformat(manifest.started_at).timestamp()
    assert abs(run.info.start_time / 1000 - started) < 1, "the run starts when the scoring did"
    assert run.info.end_time >= run.info.start_time + 1000 * manifest.duration_s - 1
    assert [a.path for a in ws.client().list_artifacts(manifest.run_id)] == ["manifest.json"]
    assert run.data.tags["lifecycle.model_name"] == "churn"
    assert run.data.tags["lifecycle.model_version"] == "1"
    assert run.data.metrics["rows_scored"] == 2500 and run.data.metrics["rows_per_s"] > 0
    records = [d for d in list_deployments(ws, "churn", "1") if d["kind"] == "batch"]
    assert records and records[-1]["run_id"] == manifest.run_id


def test_csv_dialects(ws: Workspace, code_model: Path, tmp_path: Path) -> None:
    # BOM, quoted delimiter/quote/newline in a passthrough column, blank lines, NA and
    # empty as missing in a passthrough column, columns in another order than the signature.
    text = (
        "\ufeffid;n;f2;f0;f1;note\n"
        '1;2;0.5;1.5;0;"semi; colon"\n'
        "\n"
        '2;0;1;-1;2;"say ""hi""\nsecond line"\n'
        "\n\n"
        "3;1;1;0.25;1;NA\n"
        "4;1;1;2;1;\n"
    )
    src = tmp_path / "d.csv"
    src.write_bytes(text.encode("utf-8"))
    out = tmp_path / "o.csv"
    m = score(ws, str(code_model), src, out, keep_all=True, delimiter=";", workers=1, record=False)
    assert (m.rows_read, m.rows_scored, m.rows_rejected) == (4, 4, 0)
    rows = list(csv.reader(out.open(encoding="utf-8", newline=""), delimiter=";"))
    assert rows[0] == ["id", "n", "f2", "f0", "f1", "note", "prediction"]
    assert [r[5] for r in rows[1:]] == ["semi; colon", 'say "hi"\nsecond line', "", ""]
    assert [float(r[-1]) for r in rows[1:]] == [5.0, -2.0, 1.5, 5.0]


def test_tab_delimiter_and_dataframe_outputs(ws: Workspace, tmp_path: Path) -> None:
    model = save_code_model(tmp_path / "designer", designer_style=True)
    df = scoring_frame(50)
    src = tmp_path / "t.tsv"
    df.to_csv(src, sep="\t", index=False)
    out = tmp_path / "t.out.csv"
    score(ws, str(model), src, out, keep_columns=["id"], delimiter="\t", workers=1, record=False)
    result = pd.read_csv(out, sep="\t")
    assert list(result.columns) == ["id", "Scored Labels", "Scored Probabilities"]
    expected = mlflow.pyfunc.load_model(str(model)).predict(df)
    np.testing.assert_allclose(result["Scored Probabilities"], expected["Scored Probabilities"])
    assert result["Scored Labels"].tolist() == expected["Scored Labels"].tolist()


def _bad_csv(path: Path) -> Path:
    path.write_text(
        "id,f0,f1,f2,n,comment\n"
        "a,1,2,3,1,ok\n"
        "b,not-a-number,2,3,1,bad float\n"
        "c,1,2,3,,missing long\n"
        "d,1,2,3\n"  # malformed: too few fields
        "e,1,2,3,2.5,not integral\n"
        "f,,2,3,1,missing float -> model error\n"
        "g,0.5,1,1,0,ok\n",
        encoding="utf-8",
    )
    return path


def test_rejects_reconcile_and_max_error_rate(
    ws: Workspace, logreg_dir: Path, tmp_path: Path
) -> None:
    src = _bad_csv(tmp_path / "bad.csv")
    out = tmp_path / "bad.out.csv"
    m = score(
        ws,
        str(logreg_dir),
        src,
        out,
        keep_columns=["id"],
        max_error_rate=0.8,
        workers=1,
        chunk_rows=3,
        record=False,
    )
    assert m.rows_read == 7 and m.rows_scored == 2 and m.rows_rejected == 5
    assert m.rows_read == m.rows_scored + m.rows_rejected
    assert pd.read_csv(out)["id"].tolist() == ["a", "g"]
    rejects = pd.read_csv(tmp_path / "bad.out.csv.rejects.csv", keep_default_na=False)
    assert list(rejects.columns) == ["source_file", "row_number", "raw_text", "reason"]
    by_id = {r.raw_text.split(",")[0]: r for r in rejects.itertuples()}
    assert set(by_id) == {"b", "c", "d", "e", "f"}
    assert "cannot convert 'not-a-number' to double" in by_id["b"].reason
    assert by_id["b"].row_number == "2" and by_id["b"].source_file == "bad.csv"
    assert "missing value for required column 'n'" in by_id["c"].reason
    assert "malformed record" in by_id["d"].reason and by_id["d"].raw_text == "d,1,2,3"
    assert "cannot convert" in by_id["e"].reason
    assert by_id["f"].reason.startswith("model error:")

    # The same input with the default max error rate 0 fails and leaves no output.
    out2 = tmp_path / "strict.csv"
    with pytest.raises(ScoringError, match=r"5 of 7 rows rejected .* exceeds --max-error-rate 0"):
        score(ws, str(logreg_dir), src, out2, workers=1, record=False)
    assert not out2.exists()
    assert (tmp_path / "strict.csv.rejects.csv").exists(), "the rejects explain the failure"
    assert not list(tmp_path.glob(".strict.csv*"))


def test_missing_signature_column_is_one_line_schema_error(
    ws: Workspace, logreg_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "x.csv"
    scoring_frame(5).drop(columns=["f1"]).rename(columns={"f2": "f_two"}).to_csv(src, index=False)
    out = tmp_path / "x.out.csv"
    with pytest.raises(SchemaError) as err:
        score(ws, str(logreg_dir), src, out, workers=1, record=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing inputs ['f1', 'f2']" in msg and "'f_two'" in msg
    assert not out.exists()


def test_failure_mid_run_leaves_no_output(ws: Workspace, tmp_path: Path) -> None:
    # A model that fails on every row: every row is rejected, the rate check fails the run
    # after output was already streamed into the temp file.
    model = save_code_model(tmp_path / "m")
    src = tmp_path / "in.csv"
    df = scoring_frame(30)
    df["n"] = df["n"].astype(str)
    df.loc[25:, "n"] = "x"  # the last chunk fails coercion
    df.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(ScoringError):
        score(ws, str(model), src, out, chunk_rows=10, workers=1, record=False)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv",
        "m",
        "m_code.py",
        "out.csv.rejects.csv",
    ]


def test_multi_file_parquet_in_and_out(ws: Workspace, code_model: Path, tmp_path: Path) -> None:
    a, b = scoring_frame(40, seed=2), scoring_frame(25, seed=3)
    (tmp_path / "in").mkdir()
    a.to_csv(tmp_path / "in" / "a.csv", index=False)
    b.to_parquet(tmp_path / "in" / "b.parquet", index=False)
    out = tmp_path / "all.parquet"
    m = score(
        ws,
        str(code_model),
        tmp_path / "in",
        out,
        keep_columns=["id"],
        workers=1,
        chunk_rows=16,
        record=False,
    )
    assert m.rows_read == 65 and m.rows_scored == 65
    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["source_file", "source_row", "id", "prediction"]
    assert table["source_file"].tolist() == ["a.csv"] * 40 + ["b.parquet"] * 25
    assert table["source_row"].tolist() == list(range(1, 41)) + list(range(1, 26))
    both = pd.concat([a, b], ignore_index=True)
    np.testing.assert_allclose(table["prediction"], _expected(code_model, both))

    # One output per input into a folder (CSV), with a manifest in the folder.
    out_dir = tmp_path / "scored"
    out_dir.mkdir()
    m2 = score(
        ws,
        str(code_model),
        [tmp_path / "in" / "a.csv", tmp_path / "in" / "b.parquet"],
        out_dir,
        workers=1,
        record=False,
    )
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "a.scored.csv",
        "b.scored.csv",
        "manifest.json",
    ]
    assert len(pd.read_csv(out_dir / "b.scored.csv")) == 25 and m2.rows_scored == 65
    assert "source_file" not in pd.read_csv(out_dir / "a.scored.csv").columns


def test_bad_arguments_are_refused(ws: Workspace, code_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    scoring_frame(3).to_csv(src, index=False)
    with pytest.raises(InvalidArgumentError, match="max error rate 2"):
        score(ws, str(code_model), src, tmp_path / "o.csv", max_error_rate=2)
    with pytest.raises(InvalidArgumentError, match=r"--keep-columns names column\(s\) \['nope'\]"):
        score(ws, str(code_model), src, tmp_path / "o.csv", keep_columns=["nope"])
    with pytest.raises(ScoringError, match="does not exist"):
        score(ws, str(code_model), tmp_path / "missing.csv", tmp_path / "o.csv")
    with pytest.raises(ScoringError, match="matches no files"):
        score(ws, str(code_model), str(tmp_path / "*.parquet"), tmp_path / "o.csv")
