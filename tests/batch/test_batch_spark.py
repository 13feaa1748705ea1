"""The Spark engine on Spark local mode: same outputs, rejects and counts as the local engine.

Needs Java 17 (`java` on PATH) and pyspark (the `spark` extra). When either is missing
these tests FAIL with a message saying which (set LIFECYCLE_SKIP_SPARK=1 to skip them
instead on a machine that cannot run Spark).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from batch.engine import score
from lifecycle.base.errors import ScoringError
from lifecycle.base.workspaces import Workspace, local_workspace
from tests.support.batch_models import save_code_model, save_logreg, scoring_frame
from tests.support.procs import kill_after_first_file

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local SparkSession for the module (starting Spark costs ~20-40 s here)."""
    if os.environ.get("LIFECYCLE_SKIP_SPARK"):
        pytest.skip("LIFECYCLE_SKIP_SPARK is set")
    if shutil.which("java") is None:
        pytest.fail(
            "Spark tests need Java 17: no 'java' on PATH (apt-get install openjdk-17-jre-headless)"
        )
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.fail("Spark tests need pyspark: pip install -e '.[spark]'")
    from batch.spark import get_spark

    session = get_spark("local[1]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return local_workspace("dev", tmp_path_factory.mktemp("ws"))


def test_spark_matches_local_engine_with_rejects(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    model = save_logreg(tmp_path / "logreg")
    a = scoring_frame(60, seed=4)
    a["n"] = a["n"].astype(str)
    a.loc[7, "n"] = "x"  # coercion reject
    a.loc[11, "comment"] = 'quoted, "with"\nnewline'
    a.to_csv(tmp_path / "a.csv", index=False)
    with (tmp_path / "a.csv").open("a", encoding="utf-8") as fh:
        fh.write("z,1,2\n")  # malformed record
    scoring_frame(30, seed=5).to_parquet(tmp_path / "b.parquet", index=False)
    inputs = [tmp_path / "a.csv", tmp_path / "b.parquet"]

    kwargs = {"keep_columns": ["id", "comment"], "max_error_rate": 0.1, "record": False}
    local = score(ws, str(model), inputs, tmp_path / "local.csv", workers=1, **kwargs)
    sparked = score(
        ws, str(model), inputs, tmp_path / "spark.csv", engine="spark", master="local[1]", **kwargs
    )
    assert (sparked.rows_read, sparked.rows_scored, sparked.rows_rejected) == (91, 89, 2)
    assert (local.rows_read, local.rows_scored, local.rows_rejected) == (91, 89, 2)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "spark.csv"), pd.read_csv(tmp_path / "local.csv")
    )
    rejects = pd.read_csv(tmp_path / "spark.csv.rejects.csv", keep_default_na=False)
    assert rejects["reason"].tolist() == [
        "column 'n': cannot convert 'x' to long",
        "malformed record: expected 6 fields, got 3",
    ]
    assert rejects["row_number"].tolist() == ["8", ""]


def _awkward_inputs(tmp_path: Path) -> list[Path]:
    """Two CSV files and a Parquet file with everything the engines must treat alike."""
    a = scoring_frame(120, seed=21)
    a["n"] = a["n"].astype(str)
    a["f1"] = a["f1"].map(lambda v: f"{v:.2f}0")  # trailing zeros: kept as written
    a.loc[7, "n"] = "x"  # coercion reject
    a.loc[11, "comment"] = 'quoted, "with"\nnewline'
    a.loc[15, "comment"] = "NA"  # missing, like an empty cell
    a.loc[16, "comment"] = ""
    a["f0"] = a["f0"].astype(object)
    a.loc[[30, 90], "f0"] = None  # LogisticRegression refuses NaN: model rejects
    text = a.to_csv(index=False).splitlines(keepends=True)
    # Malformed records in the middle and at the end, not only last.
    text.insert(20, "z,1,2\n")
    text.insert(61, "1,2,3,4,5,6,7\n")
    text.append("tail,only\n")
    (tmp_path / "a.csv").write_text("".join(text), encoding="utf-8")
    scoring_frame(40, seed=22).to_csv(tmp_path / "b.csv", index=False)
    c = scoring_frame(50, seed=23)
    c.loc[3, "f2"] = None  # a model reject in a Parquet input (native types kept)
    c.to_parquet(tmp_path / "c.parquet", index=False)
    return [tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.parquet"]


@pytest.mark.parametrize("out_name", ["out.csv", "out.parquet", "folder/"])
def test_spark_output_and_rejects_are_byte_identical_to_the_local_engine(
    spark: object, ws: Workspace, tmp_path: Path, out_name: str
) -> None:
    """Issue #23 item 3: same rows, same rejects in file order with the same reasons, the
    same Parquet schema, counts that reconcile — compared byte for byte."""
    import pyarrow.parquet as pq

    model = save_logreg(tmp_path / "logreg")
    inputs = _awkward_inputs(tmp_path)
    kwargs = {"keep_columns": ["id", "comment", "f1"], "max_error_rate": 0.2, "record": False}
    local_out, spark_out = tmp_path / "local" / out_name, tmp_path / "spark" / out_name
    for d in (local_out.parent, spark_out.parent):
        d.mkdir(parents=True, exist_ok=True)
    local = score(ws, str(model), inputs, local_out, workers=2, chunk_rows=25, **kwargs)
    sparked = score(
        ws, str(model), inputs, spark_out, engine="spark", master="local[1]", chunk_rows=25,
        **kwargs,
    )  # fmt: skip
    assert (sparked.rows_read, sparked.rows_scored, sparked.rows_rejected) == (
        local.rows_read, local.rows_scored, local.rows_rejected,
    )  # fmt: skip
    assert local.rows_read == 120 + 3 + 40 + 50
    assert sparked.rows_read == sparked.rows_scored + sparked.rows_rejected
    local_files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*"))
    spark_files = sorted(p.relative_to(tmp_path / "spark") for p in (tmp_path / "spark").rglob("*"))
    assert local_files == spark_files
    compared = 0
    for rel in local_files:
        if rel.name.endswith("manifest.json") or (tmp_path / "local" / rel).is_dir():
            continue
        left, right = tmp_path / "local" / rel, tmp_path / "spark" / rel
        if rel.suffix == ".parquet":
            assert pq.read_schema(left) == pq.read_schema(right), rel
            assert pq.read_table(left).equals(pq.read_table(right)), rel
        else:
            assert left.read_bytes() == right.read_bytes(), rel
        compared += 1
    assert compared >= 2
    rejects = sorted((tmp_path / "spark").rglob("*.rejects.csv"))
    reasons = pd.concat(pd.read_csv(r, keep_default_na=False) for r in rejects)
    a_rows = reasons[reasons["source_file"] == "a.csv"]
    # File order: row 8's coercion reject, the malformed record after row 18, then row 31.
    assert a_rows["reason"].tolist()[:3] == [
        "column 'n': cannot convert 'x' to long",
        "malformed record: expected 6 fields, got 3",
        a_rows["reason"].tolist()[2],
    ]
    assert a_rows["reason"].tolist()[2].startswith("model error:")
    assert a_rows["reason"].tolist()[-1] == "malformed record: expected 6 fields, got 2"


def test_spark_designer_outputs_parquet_and_error_rate(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    model = save_code_model(tmp_path / "designer", designer_style=True)
    meta = Model.load(str(model))
    assert meta.signature is not None
    # Declare the DataFrame outputs so spark_udf returns a struct with Designer's names.
    meta.signature = ModelSignature(
        inputs=meta.signature.inputs,
        outputs=Schema(
            [ColSpec("long", "Scored Labels"), ColSpec("double", "Scored Probabilities")]
        ),
    )
    meta.save(str(model / "MLmodel"))
    df = scoring_frame(40, seed=6)
    df.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "o.parquet"
    m = score(
        ws, str(model), tmp_path / "in.csv", out, engine="spark", keep_columns=["id"], record=False
    )
    assert m.rows_scored == 40
    result = pd.read_parquet(out)
    assert list(result.columns) == ["id", "Scored Labels", "Scored Probabilities"]
    assert result["id"].tolist() == df["id"].tolist()

    df["f0"] = df["f0"].astype(str)
    df.loc[3, "f0"] = "oops"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ScoringError, match="1 of 40 rows rejected"):
        score(
            ws,
            str(model),
            tmp_path / "bad.csv",
            tmp_path / "bad.out.csv",
            engine="spark",
            record=False,
        )
    assert not (tmp_path / "bad.out.csv").exists()


def test_rows_the_model_fails_on_become_rejects_on_spark(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    # LogisticRegression refuses NaN: rows with an empty f0 pass coercion (a double may be
    # missing) and fail in the model, which fails spark_udf's whole batch.
    model = save_logreg(tmp_path / "logreg")
    df = scoring_frame(50, seed=8)
    df["f0"] = df["f0"].astype(object)
    df.loc[[4, 31], "f0"] = None
    df["n"] = df["n"].astype(str)
    df.loc[9, "n"] = "x"  # a coercion reject too
    df.to_csv(tmp_path / "in.csv", index=False)
    kwargs = {"keep_columns": ["id"], "max_error_rate": 0.1, "record": False}
    local = score(ws, str(model), tmp_path / "in.csv", tmp_path / "local.csv", workers=1, **kwargs)
    sparked = score(
        ws,
        str(model),
        tmp_path / "in.csv",
        tmp_path / "spark.csv",
        engine="spark",
        master="local[1]",
        **kwargs,
    )
    assert (sparked.rows_read, sparked.rows_scored, sparked.rows_rejected) == (50, 47, 3)
    assert (local.rows_read, local.rows_scored, local.rows_rejected) == (50, 47, 3)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "spark.csv"), pd.read_csv(tmp_path / "local.csv")
    )
    spark_rejects = pd.read_csv(tmp_path / "spark.csv.rejects.csv", keep_default_na=False)
    local_rejects = pd.read_csv(tmp_path / "local.csv.rejects.csv", keep_default_na=False)
    assert spark_rejects["row_number"].tolist() == [5, 10, 32]
    assert spark_rejects["row_number"].tolist() == local_rejects["row_number"].tolist()
    assert spark_rejects["raw_text"].tolist() == local_rejects["raw_text"].tolist()
    reasons = spark_rejects["reason"].tolist()
    assert reasons[0].startswith("model error:") and reasons[2].startswith("model error:")
    assert reasons[1] == "column 'n': cannot convert 'x' to long"


_PICKY = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Picky(PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["f0"] > 1e6).any():
            raise ValueError("f0 out of range")
        x = model_input["f0"] * 2 + model_input["n"]
        return pd.DataFrame({"Scored Labels": (x > 0).astype(int), "Scored Probabilities": x / 10})


mlflow.models.set_model(Picky())
"""


def test_model_failures_with_named_outputs_to_parquet_on_spark(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    code = tmp_path / "picky.py"
    code.write_text(_PICKY, encoding="utf-8")
    cols = [ColSpec("double", "f0"), ColSpec("double", "f1"), ColSpec("double", "f2")]
    mlflow.pyfunc.save_model(
        str(tmp_path / "picky"),
        python_model=str(code),
        signature=ModelSignature(
            inputs=Schema([*cols, ColSpec("long", "n")]),
            outputs=Schema(
                [ColSpec("long", "Scored Labels"), ColSpec("double", "Scored Probabilities")]
            ),
        ),
    )
    df = scoring_frame(30, seed=9)
    df.loc[[2, 17], "f0"] = 5e6
    df.to_csv(tmp_path / "in.csv", index=False)
    kwargs = {"keep_columns": ["id"], "max_error_rate": 0.1, "record": False}
    m = score(
        ws, str(tmp_path / "picky"), tmp_path / "in.csv", tmp_path / "o.parquet",
        engine="spark", master="local[1]", **kwargs,
    )  # fmt: skip
    local = score(
        ws, str(tmp_path / "picky"), tmp_path / "in.csv", tmp_path / "l.parquet",
        workers=1, **kwargs,
    )  # fmt: skip
    assert (m.rows_read, m.rows_scored, m.rows_rejected) == (30, 28, 2)
    assert (local.rows_scored, local.rows_rejected) == (28, 2)
    got, expected = pd.read_parquet(tmp_path / "o.parquet"), pd.read_parquet(tmp_path / "l.parquet")
    assert list(got.columns) == ["id", "Scored Labels", "Scored Probabilities"]
    assert got["id"].tolist() == expected["id"].tolist() == df.drop(index=[2, 17])["id"].tolist()
    assert got["Scored Labels"].tolist() == expected["Scored Labels"].tolist()
    assert got["Scored Probabilities"].tolist() == expected["Scored Probabilities"].tolist()
    rejects = pd.read_csv(tmp_path / "o.parquet.rejects.csv", keep_default_na=False)
    assert rejects["row_number"].tolist() == [3, 18]
    assert all(r.startswith("model error: f0 out of range") for r in rejects["reason"])


def _three_inputs(tmp_path: Path) -> list[Path]:
    """Three CSV files of 50 rows with one reject each (before and after a stop)."""
    inputs = []
    for i in range(3):
        df = scoring_frame(50, seed=10 + i)
        df["n"] = df["n"].astype(str)
        df.loc[5 + i, "n"] = "bad"
        df.to_csv(tmp_path / f"p{i}.csv", index=False)
        inputs.append(tmp_path / f"p{i}.csv")
    return inputs


def test_killed_spark_run_resumes_to_byte_identical_output(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    """A real `lifecycle score --engine spark` process killed after its first input file:
    the rerun skips that file and writes the same bytes as an uninterrupted run."""
    import subprocess
    import sys

    model = save_code_model(tmp_path / "slow", sleep=0.5)  # widens the window between files
    inputs = _three_inputs(tmp_path)
    kwargs = {"keep_columns": ["id"], "max_error_rate": 0.1, "record": False}
    ref = score(ws, str(model), inputs, tmp_path / "ref.csv", engine="spark", **kwargs)

    out, checkpoint = tmp_path / "out.csv", tmp_path / ".out.csv.checkpoint.json"
    cmd = [sys.executable, "-m", "lifecycle", "score", str(model), *map(str, inputs),
           "-o", str(out), "--engine", "spark", "--master", "local[1]", "--keep-columns", "id",
           "--max-error-rate", "0.1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    done = kill_after_first_file(proc, checkpoint, timeout=180)  # the driver and its JVM
    assert 1 <= done < 3 and not out.exists(), "killed between files, nothing renamed in place"

    again = score(ws, str(model), inputs, out, engine="spark", **kwargs)
    assert again.resumed is True
    assert (again.rows_read, again.rows_scored, again.rows_rejected) == (150, 147, 3)
    assert out.read_bytes() == (tmp_path / "ref.csv").read_bytes()
    rejects = tmp_path / "out.csv.rejects.csv"
    assert rejects.read_bytes() == (tmp_path / "ref.csv.rejects.csv").read_bytes()
    assert (ref.rows_read, ref.rows_rejected) == (150, 3) and not checkpoint.exists()


def test_interrupted_spark_run_resumes_parquet_and_reports_progress(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    """Ctrl-C after the first file keeps the checkpoint; the rerun writes the same Parquet
    bytes as an uninterrupted run. Progress is reported after every input file."""
    model = save_logreg(tmp_path / "logreg")
    inputs = _three_inputs(tmp_path)
    kwargs = {"keep_columns": ["id"], "max_error_rate": 0.1, "record": False}
    seen: list[dict[str, object]] = []
    ref = score(
        ws, str(model), inputs, tmp_path / "ref.parquet", engine="spark", progress=seen.append,
        **kwargs,
    )  # fmt: skip
    assert [p["file"] for p in seen] == ["p0.csv", "p1.csv", "p2.csv"]
    assert [p["rows_read"] for p in seen] == [50, 100, 150]

    def stop_after_first(p: dict[str, object]) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        score(ws, str(model), inputs, out, engine="spark", progress=stop_after_first, **kwargs)
    assert not out.exists() and (tmp_path / ".out.parquet.checkpoint.json").exists()
    again = score(ws, str(model), inputs, out, engine="spark", **kwargs)
    assert again.resumed is True and again.rows_read == ref.rows_read == 150
    assert out.read_bytes() == (tmp_path / "ref.parquet").read_bytes()
    assert (
        pd.read_parquet(out)["id"].tolist()
        == pd.read_parquet(tmp_path / "ref.parquet")["id"].tolist()
    )
    assert (tmp_path / "out.parquet.rejects.csv").read_bytes() == (
        tmp_path / "ref.parquet.rejects.csv"
    ).read_bytes()


def test_uri_inputs_and_output_go_through_sparks_file_system(
    spark: object, ws: Workspace, tmp_path: Path
) -> None:
    """Issue #23 item 2: file:// URIs (a folder, a glob) are listed and read through Spark's
    Hadoop file system; a URI output is staged, then copied into place with its rejects and
    manifest; the bytes equal the local engine's on the same files."""
    import json

    model = save_logreg(tmp_path / "logreg")
    data = tmp_path / "data"
    data.mkdir()
    for p in _awkward_inputs(tmp_path):
        p.rename(data / p.name)
    dest = tmp_path / "dest"
    dest.mkdir()
    kwargs = {"keep_columns": ["id"], "max_error_rate": 0.2, "record": False}
    local = score(ws, str(model), sorted(data.iterdir()), tmp_path / "local.csv", **kwargs)
    m = score(
        ws, str(model), [data.as_uri() + "/"], dest.as_uri() + "/out.csv",
        engine="spark", master="local[1]", **kwargs,
    )  # fmt: skip
    assert sorted(p.name for p in dest.iterdir()) == [
        "out.csv",
        "out.csv.manifest.json",
        "out.csv.rejects.csv",
    ]
    assert (dest / "out.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (dest / "out.csv.rejects.csv").read_bytes() == (
        tmp_path / "local.csv.rejects.csv"
    ).read_bytes()
    manifest = json.loads((dest / "out.csv.manifest.json").read_text())
    assert manifest["outputs"][0]["path"] == dest.as_uri() + "/out.csv"
    assert [i["path"] for i in manifest["inputs"]] == [
        (data / n).as_uri().replace("file:///", "file:/") for n in ("a.csv", "b.csv", "c.parquet")
    ]
    assert all(i["sha256"] is None and i["sha256_absent"] for i in manifest["inputs"])
    assert m.rows_read == local.rows_read == m.rows_scored + m.rows_rejected

    glob = score(
        ws, str(model), [data.as_uri() + "/*.csv"], tmp_path / "g.csv",
        engine="spark", master="local[1]", **kwargs,
    )  # fmt: skip
    assert glob.rows_read == 120 + 3 + 40
    with pytest.raises(ScoringError, match=r"Input 'file:.*/nothing\.csv' does not exist"):
        score(ws, str(model), [data.as_uri() + "/nothing.csv"], tmp_path / "n.csv",
              engine="spark", master="local[1]", **kwargs)  # fmt: skip


def test_local_paths_are_refused_with_a_cluster_master(ws: Workspace, tmp_path: Path) -> None:
    """A path on this machine with a master whose executors run elsewhere: one line, before
    any Spark session starts; --shared-path lifts it (checked by the cluster test)."""
    model = save_logreg(tmp_path / "logreg")
    scoring_frame(5).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(ScoringError) as info:
        score(ws, str(model), tmp_path / "in.csv", tmp_path / "o.csv", engine="spark",
              master="spark://127.0.0.1:1", record=False)  # fmt: skip
    message = str(info.value)
    assert "\n" not in message
    assert f"Input '{tmp_path / 'in.csv'}' is a path on this machine" in message
    assert "--shared-path" in message and "hdfs://" in message
    with pytest.raises(Exception, match="only --engine spark reads and writes URIs"):
        score(ws, str(model), (tmp_path / "in.csv").as_uri(), tmp_path / "o.csv", record=False)
