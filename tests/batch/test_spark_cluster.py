"""The Spark engine on a real standalone cluster (issue #23): a master and a one-core worker
on 127.0.0.1 started with pyspark's ``spark-class``; the worker runs in its own mount
namespace where the driver's temp folder (which holds the model) is an empty tmpfs, as on
another host. The driver is a real ``lifecycle score`` process with that temp folder.

Needs Java 17, pyspark and ``unshare`` (util-linux) with user namespaces; the tests FAIL
saying which is missing (LIFECYCLE_SKIP_SPARK=1 skips them on a machine that cannot run
Spark).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.engine import score
from lifecycle.base.workspaces import local_workspace
from tests.batch.test_batch_spark import _awkward_inputs, _three_inputs
from tests.support.batch_models import save_code_model, save_logreg
from tests.support.procs import kill_after_first_file
from tests.support.spark_cluster import Cluster, hiding_supported, start_cluster

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver's temp folder: the worker's namespace mounts an empty tmpfs over it."""
    path = tmp_path_factory.mktemp("driver-tmp")
    (path / "sentinel").write_text("the worker must not see this")
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, hidden: Path) -> Iterator[Cluster]:
    if os.environ.get("LIFECYCLE_SKIP_SPARK"):
        pytest.skip("LIFECYCLE_SKIP_SPARK is set")
    if shutil.which("java") is None:
        pytest.fail("the cluster test needs Java 17: no 'java' on PATH")
    why = hiding_supported()
    if why is not None:
        pytest.fail(f"the cluster test hides the driver's temp folder from the worker: {why}")
    c = start_cluster(tmp_path_factory.mktemp("cluster"), hidden)
    try:
        assert c.worker_saw() == [], "the worker's namespace must not show the driver's temp"
        yield c
    finally:
        c.stop()


def _lifecycle(args: list[str], cwd: Path, hidden: Path, **popen: object) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TMPDIR": str(hidden),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle", *args],
        cwd=cwd, env=env, text=True, start_new_session=True, **popen,  # type: ignore[call-overload]
    )  # fmt: skip


def _run(args: list[str], cwd: Path, hidden: Path) -> subprocess.CompletedProcess[str]:
    proc = _lifecycle(args, cwd, hidden, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _executor_tasks(cluster: Cluster) -> int:
    """Apps whose executors ran on the worker (each leaves a folder in its work dir)."""
    work = cluster.logs.parent / "worker-work"
    return len(list(work.glob("app-*")))


def _leftovers(hidden: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in hidden.iterdir() if p.name not in keep)


def test_cluster_scores_like_the_local_engine_with_a_worker_that_cannot_see_the_driver(
    cluster: Cluster, hidden: Path, tmp_path: Path
) -> None:
    """The model lives only in the driver's temp folder: it reaches the executor as an
    archive. CSV and Parquet inputs on shared storage (file:// URIs) with malformed records,
    values that do not convert and rows the model refuses: the outputs and rejects equal the
    local engine's byte for byte, counts reconcile, and nothing is left in the temp folder."""
    model = save_logreg(hidden / "model-a")
    shared = tmp_path / "shared"
    shared.mkdir()
    inputs = _awkward_inputs(shared)
    ws = local_workspace("dev", tmp_path / "ws")
    kwargs = {"keep_columns": ["id", "comment", "f1"], "max_error_rate": 0.2, "record": False}
    score(ws, str(model), inputs, tmp_path / "local.csv", chunk_rows=40, **kwargs)
    score(ws, str(model), inputs, tmp_path / "local.parquet", chunk_rows=40, **kwargs)
    apps_before = _executor_tasks(cluster)

    common = ["--engine", "spark", "--master", cluster.master_url, "--chunk-rows", "40",
              "--keep-columns", "id,comment,f1", "--max-error-rate", "0.2", "--json"]  # fmt: skip
    uris = [p.as_uri() for p in inputs]
    csv_run = _run(
        ["score", str(model), *uris, "-o", (shared / "out.csv").as_uri(), *common], tmp_path, hidden
    )
    assert csv_run.returncode == 0, csv_run.stderr[-3000:] + cluster.log_tail()
    pq_run = _run(
        ["score", str(model), *uris, "-o", str(tmp_path / "out.parquet"), *common],
        tmp_path,
        hidden,
    )
    assert pq_run.returncode == 0, pq_run.stderr[-3000:]
    assert _executor_tasks(cluster) == apps_before + 2, "the executors ran on the worker"

    manifest = json.loads(csv_run.stdout)
    assert manifest["rows_read"] == 213 == manifest["rows_scored"] + manifest["rows_rejected"]
    assert manifest["rows_rejected"] == 7
    assert (shared / "out.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (shared / "out.csv.rejects.csv").read_bytes() == (
        tmp_path / "local.csv.rejects.csv"
    ).read_bytes()
    import pyarrow.parquet as pq

    assert pq.read_schema(tmp_path / "out.parquet") == pq.read_schema(tmp_path / "local.parquet")
    assert pq.read_table(tmp_path / "out.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    assert (tmp_path / "out.parquet.rejects.csv").read_bytes() == (
        tmp_path / "local.parquet.rejects.csv"
    ).read_bytes()
    assert cluster.worker_saw() == []
    assert _leftovers(hidden, {"sentinel", "model-a", "model-a_code.py"}) == []


def test_local_input_claimed_shared_but_hidden_fails_with_the_executors_root_cause(
    cluster: Cluster, hidden: Path, tmp_path: Path
) -> None:
    """--shared-path on a path the worker cannot see: the error names the executor's cause
    in one line (not 'An error occurred while calling o64...') and no output is left."""
    model = save_logreg(hidden / "model-b")
    data = hidden / "private.csv"
    shutil.copy(_awkward_inputs(tmp_path)[1], data)
    try:
        run = _run(
            ["score", str(model), str(data), "-o", str(tmp_path / "o.csv"), "--engine", "spark",
             "--master", cluster.master_url, "--shared-path"],
            tmp_path, hidden,
        )  # fmt: skip
    finally:
        data.unlink()
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, run.stderr[-3000:]
    assert "private.csv" in lines[0] and "does not exist" in lines[0], lines[0]
    assert not (tmp_path / "o.csv").exists()

    refused = _run(
        ["score", str(model), str(tmp_path / "b.csv"), "-o", str(tmp_path / "o.csv"),
         "--engine", "spark", "--master", cluster.master_url],
        tmp_path, hidden,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "is a path on this machine, but Spark master" in refused.stderr


def test_killed_cluster_run_resumes_to_identical_bytes_and_the_next_run_cleans_up(
    cluster: Cluster, hidden: Path, tmp_path: Path
) -> None:
    """SIGKILL of the driver after its first input file: its scratch folder is left in the
    temp folder; the rerun removes it, skips the scored file and writes the same bytes as
    an uninterrupted run."""
    model = save_code_model(hidden / "slow", sleep=1.0)
    shared = tmp_path / "shared"
    shared.mkdir()
    uris = [p.as_uri() for p in _three_inputs(shared)]
    out = tmp_path / "out.csv"

    def command(target: Path) -> list[str]:
        return ["score", str(model), *uris, "-o", str(target), "--engine", "spark",
                "--master", cluster.master_url, "--keep-columns", "id", "--max-error-rate", "0.1"]  # fmt: skip

    args = command(out)
    ref = _run(command(tmp_path / "ref.csv"), tmp_path, hidden)
    assert ref.returncode == 0, ref.stderr[-3000:]

    checkpoint = tmp_path / ".out.csv.checkpoint.json"
    proc = _lifecycle(args, tmp_path, hidden, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_after_first_file(proc, checkpoint)  # the driver and its JVM
    left = [p.name for p in hidden.glob("lifecycle-spark-*")]
    assert left == [f"lifecycle-spark-{proc.pid}"], left
    assert not out.exists()

    again = _run([*args, "--json"], tmp_path, hidden)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["resumed"] is True
    assert out.read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert (tmp_path / "out.csv.rejects.csv").read_bytes() == (
        tmp_path / "ref.csv.rejects.csv"
    ).read_bytes()
    assert list(hidden.glob("lifecycle-spark-*")) == []
