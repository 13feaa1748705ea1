"""Resume: a real `lifecycle score` process killed mid-run continues to byte-identical output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch.engine import score
from lifecycle.base.workspaces import local_workspace
from tests.support.batch_models import save_code_model, scoring_frame

# These tests score model directories they wrote themselves: consent to unpickle them.
pytestmark = pytest.mark.usefixtures("trusted_pickles")


def _score_cmd(model: Path, src: Path, out: Path, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "lifecycle", "score", str(model), str(src), "-o", str(out),
        "--chunk-rows", "20", "--workers", str(workers), "--keep-columns", "id",
        "--max-error-rate", "0.1",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_killed_run_resumes_to_byte_identical_output(tmp_path: Path, fmt: str) -> None:
    model = save_code_model(tmp_path / "slow", sleep=0.12)
    df = scoring_frame(400)
    df["n"] = df["n"].astype(str)
    df.loc[[33, 250], "n"] = ["bad", "1.5"]  # two rejects, before and after the kill
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)

    # Reference: one uninterrupted run (in process).
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    ref = tmp_path / f"ref.{fmt}"
    score(ws, str(model), src, ref, keep_columns=["id"], chunk_rows=20, workers=1,
          max_error_rate=0.1, record=False)  # fmt: skip

    out = tmp_path / f"out.{fmt}"
    checkpoint = tmp_path / f".out.{fmt}.checkpoint.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        _score_cmd(model, src, out, workers=2),
        cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        seq = 0
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists():
                try:
                    seq = json.loads(checkpoint.read_text())["seq"]
                except (json.JSONDecodeError, OSError):
                    seq = 0
                if seq >= 5:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"run finished before it could be killed: {proc.stderr}"
        assert seq >= 5
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not out.exists(), "a killed run leaves no output file"
    # CSV streams into one partial file; Parquet into part files (a footer-less Parquet
    # file could not be continued).
    unfinished = tmp_path / (".out.csv.partial" if fmt == "csv" else ".out.parquet.parts")
    assert unfinished.exists()

    done = subprocess.run(
        [*_score_cmd(model, src, out, workers=1), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["resumed"] is True
    assert (manifest["rows_read"], manifest["rows_scored"], manifest["rows_rejected"]) == (
        400,
        398,
        2,
    )
    assert out.read_bytes() == ref.read_bytes()
    assert (tmp_path / f"out.{fmt}.rejects.csv").read_bytes() == (
        tmp_path / f"ref.{fmt}.rejects.csv"
    ).read_bytes()
    assert not checkpoint.exists() and not unfinished.exists()
    assert not list(tmp_path.glob(".out.*")), "nothing of the run is left behind"


@pytest.mark.parametrize("change", ["input", "options"])
def test_checkpoint_of_other_arguments_is_ignored(tmp_path: Path, change: str) -> None:
    model = save_code_model(tmp_path / "m")
    src = tmp_path / "in.csv"
    scoring_frame(60).to_csv(src, index=False)
    ws = local_workspace("dev", tmp_path / ".lifecycle")
    out = tmp_path / "o.csv"
    # A stale checkpoint from a run with other arguments: must not be trusted.
    (tmp_path / ".o.csv.partial").write_bytes(b"garbage\n")
    (tmp_path / ".o.csv.checkpoint.json").write_text(
        json.dumps({"version": 1, "fingerprint": "other", "seq": 1, "out_bytes": 8})
    )
    if change == "input":
        scoring_frame(61).to_csv(src, index=False)
    m = score(ws, str(model), src, out, chunk_rows=20, workers=1, record=False)
    assert m.resumed is False
    assert b"garbage" not in out.read_bytes()
    assert m.rows_scored == (61 if change == "input" else 60)
