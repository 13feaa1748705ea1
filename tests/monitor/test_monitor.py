"""Baselines and drift detection on synthetic data with known drift, through library and CLI.

Real parts only: a real scikit-learn model registered in a real SQLite workspace, its
baseline stored as a run artifact, monitor runs logged to the same store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from lifecycle.base.audit import read_history
from lifecycle.base.errors import MonitoringError
from lifecycle.base.tags import BASELINE_TAG
from lifecycle.base.workspaces import Workspace, load_config
from lifecycle.cli import cli
from lifecycle.monitor import attach_baseline, load_baseline
from lifecycle.monitor.drift import compare_column
from lifecycle.monitor.monitor import MonitorResult, monitor, monitor_history
from lifecycle.monitor.profile import BASELINE_ARTIFACT, sketch_column
from tests.support.monitor_data import SHIFTED_CAT_P, fit_model, make_data, register, write_config

N = 8000
NAME = "churn"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workspace with one registered model whose baseline is its training data."""
    root = tmp_path_factory.mktemp("monitor")
    cfg = write_config(root)
    ws = load_config(cfg).get("dev")
    train = make_data(N, seed=0)
    version = register(ws, NAME, fit_model(train), train, root / "model")
    profile = attach_baseline(ws, NAME, version, train, labels="y")
    return {"root": root, "config": cfg, "ws": ws, "version": version, "profile": profile}


def _csv(env: dict[str, Any], name: str, df: pd.DataFrame) -> Path:
    path = env["root"] / "data" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    df.to_csv(path, index=False)
    return path


def _monitor(env: dict[str, Any], df: pd.DataFrame, tag: str, **kw: Any) -> MonitorResult:
    kw.setdefault("policy", _no_actions(env))
    return monitor(env["ws"], f"models:/{NAME}/{env['version']}", [_csv(env, tag, df)], **kw)


def _no_actions(env: dict[str, Any]) -> Path:
    path = env["root"] / "observe.yaml"
    path.write_text("actions: []\n", encoding="utf-8")
    return path


def test_baseline_is_stored_with_the_version(env: dict[str, Any]) -> None:
    ws: Workspace = env["ws"]
    mv = ws.client().get_model_version(NAME, env["version"])
    assert mv.tags[BASELINE_TAG] == BASELINE_ARTIFACT
    arts = [a.path for a in ws.client().list_artifacts(mv.run_id, "lifecycle")]
    assert arts == [BASELINE_ARTIFACT]
    stored = load_baseline(ws, NAME, env["version"])
    assert stored == json.loads(json.dumps(env["profile"]))
    assert stored["feature_order"] == ["x1", "x2", "x3", "cat"]
    assert stored["features"]["x1"]["kind"] == "numeric"
    # more than EXACT_SAMPLE_MAX rows: 1,001 exact quantiles instead of the whole sample
    assert len(stored["features"]["x1"]["quantiles"]) == 1001
    assert "sorted_values" not in stored["features"]["x1"]
    assert stored["features"]["cat"]["kind"] == "categorical"
    assert stored["features"]["cat"]["categories"] == ["a", "b", "c", "d"]
    assert 0.01 < stored["features"]["x3"]["missing_rate"] < 0.03
    assert stored["task"] == "classification"
    assert stored["metrics"]["accuracy"] > 0.85
    assert stored["prediction"]["kind"] == "numeric" and stored["prediction"]["discrete"]
    # compact: beyond 2,000 rows, 1,001 exact quantiles per continuous column, not the sample
    assert len(json.dumps(stored)) < 4 * 25_000
    assert any(e["action"] == "baseline" for e in read_history(ws, NAME))


def test_unshifted_data_is_not_drift(env: dict[str, Any]) -> None:
    result = _monitor(env, make_data(N, seed=1), "same", labels="y")
    assert result.drift is False, result.reasons
    assert [f["name"] for f in result.features if f["drift"]] == []
    assert all(f["psi"] < 0.05 for f in result.features)
    assert result.actions == [] and result.exit_code == 0
    assert abs(result.metric_changes["accuracy"]) < 0.03


def test_shifted_numeric_and_category_are_flagged_by_name(env: dict[str, Any]) -> None:
    df = make_data(N, seed=2, x1_shift=1.0, cat_p=SHIFTED_CAT_P)
    result = _monitor(env, df, "shifted")
    assert result.drift is True
    flagged = {f["name"]: f for f in result.features if f["drift"]}
    assert set(flagged) == {"x1", "cat"}
    assert flagged["x1"]["psi"] > 0.25 and flagged["x1"]["ks_pvalue"] < 1e-6
    assert flagged["cat"]["psi"] > 0.25 and flagged["cat"]["chi2_pvalue"] < 1e-6
    assert flagged["cat"]["ks_pvalue"] is None
    assert any(r.startswith("feature x1:") for r in result.reasons)
    assert any(r.startswith("feature cat:") for r in result.reasons)


def test_only_the_shifted_category_is_flagged(env: dict[str, Any]) -> None:
    result = _monitor(env, make_data(N, seed=3, cat_p=SHIFTED_CAT_P), "cat-only")
    assert [f["name"] for f in result.features if f["drift"]] == ["cat"]


def test_label_based_metric_drop_is_caught(env: dict[str, Any]) -> None:
    result = _monitor(env, make_data(N, seed=4, concept_drift=True), "concept", labels="y")
    assert [f["name"] for f in result.features if f["drift"]] == []  # inputs look the same
    assert result.drift is True
    assert result.metric_changes["accuracy"] < -0.2
    assert result.metrics["accuracy"] == pytest.approx(
        result.baseline_metrics["accuracy"] + result.metric_changes["accuracy"], abs=1e-5
    )
    assert any(r.startswith("accuracy ") for r in result.reasons)


def test_missing_rate_is_flagged(env: dict[str, Any]) -> None:
    result = _monitor(env, make_data(N, seed=5, x3_missing=0.3), "missing")
    x3 = next(f for f in result.features if f["name"] == "x3")
    assert x3["drift"] and x3["missing_rate"] > 0.25
    assert any("missing rate" in r for r in x3["reasons"])


def test_monitor_run_is_logged_and_tagged(env: dict[str, Any]) -> None:
    ws: Workspace = env["ws"]
    result = _monitor(env, make_data(2000, seed=6, x1_shift=1.0), "logged")
    run = ws.client().get_run(result.run_id)
    assert run.data.tags["lifecycle.monitor.model"] == NAME
    assert run.data.tags["lifecycle.monitor.version"] == env["version"]
    assert run.data.tags["lifecycle.monitor.drift"] == "true"
    assert run.data.metrics["psi.x1"] > 0.25
    assert run.data.metrics["drifted_features"] >= 1
    assert run.info.status == "FINISHED"
    arts = [a.path for a in ws.client().list_artifacts(result.run_id, "monitor")]
    assert "monitor/monitor_result.json" in arts
    history = monitor_history(ws, NAME, env["version"])
    assert history[-1]["run_id"] == result.run_id
    last = json.loads(
        ws.client().get_model_version(NAME, env["version"]).tags["lifecycle.monitor.last"]
    )
    assert last["run_id"] == result.run_id and last["drift"] is True
    events = [e for e in read_history(ws, NAME) if e.get("monitor_run_id") == result.run_id]
    assert [e["action"] for e in events] == ["monitor"]


def test_reads_folders_of_csv_and_parquet(env: dict[str, Any]) -> None:
    folder = env["root"] / "logs"
    (folder / "2026" / "11").mkdir(parents=True)
    df = make_data(3000, seed=7)
    df.iloc[:1000].to_parquet(folder / "2026" / "11" / "part-000.parquet")
    df.iloc[1000:].to_csv(folder / "part-001.csv", index=False)
    (folder / "_writing.parquet").write_bytes(b"half written")  # a writer's temp file
    result = monitor(env["ws"], f"models:/{NAME}/latest", [folder], policy=_no_actions(env))
    assert result.rows == 3000
    assert result.drift is False


def test_missing_feature_column_is_a_clear_error(env: dict[str, Any]) -> None:
    df = make_data(100, seed=8).drop(columns=["x2"]).assign(extra=1)
    with pytest.raises(
        MonitoringError, match=r"lacks baseline feature\(s\) x2 .* extra column\(s\): y, extra"
    ):
        _monitor(env, df, "bad")


def test_version_without_baseline_says_how_to_attach(env: dict[str, Any]) -> None:
    train = make_data(500, seed=9)
    version = register(env["ws"], "nobase", fit_model(train), train, env["root"] / "nobase")
    with pytest.raises(
        MonitoringError, match="has no baseline; attach one with: lifecycle baseline"
    ):
        monitor(env["ws"], f"models:/nobase/{version}", [_csv(env, "nb", train)])


def test_ks_from_the_sketch_matches_scipy_on_raw_samples() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=10_000)
    sketch = sketch_column(pd.Series(base))
    for shift in (0.0, 0.03, 0.1, 0.5):
        new = rng.normal(size=10_000) + shift
        got = compare_column(sketch, pd.Series(new))
        want = stats.ks_2samp(base, new)
        assert got["ks_statistic"] == pytest.approx(want.statistic, abs=0.004)
        assert np.log10(max(got["ks_pvalue"], 1e-300)) == pytest.approx(
            np.log10(max(want.pvalue, 1e-300)),
            abs=max(0.5, 0.2 * abs(np.log10(max(want.pvalue, 1e-300)))),
        )


def _cli(env: dict[str, Any], *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(env["config"]), *args])


def test_cli_json_and_exit_code_3(env: dict[str, Any]) -> None:
    path = _csv(env, "cli-shifted", make_data(N, seed=10, x1_shift=1.0, cat_p=SHIFTED_CAT_P))
    res = _cli(
        env,
        "monitor",
        f"models:/{NAME}/{env['version']}",
        "-w",
        "dev",
        "--input",
        str(path),
        "--json",
    )
    assert res.exit_code == 3, res.output
    out = json.loads(res.stdout)
    assert {"model", "version", "drift", "features", "metrics", "actions"} <= set(out)
    assert (out["model"], out["version"], out["drift"]) == (NAME, env["version"], True)
    assert all({"name", "psi", "ks_pvalue", "drift"} <= set(f) for f in out["features"])
    assert {f["name"] for f in out["features"] if f["drift"]} == {"x1", "cat"}
    assert [a["action"] for a in out["actions"]] == ["tag", "exit"]  # the default policy
    assert res.stderr.strip().startswith("Drift detected for churn v1")
    assert len(res.stderr.strip().splitlines()) == 1
    mv = env["ws"].client().get_model_version(NAME, env["version"])
    assert mv.tags["needs_retraining"] == "true"
    actions = [
        e["action"]
        for e in read_history(env["ws"], NAME)
        if e.get("monitor_run_id") == out["run_id"]
    ]
    assert actions == ["monitor", "tag", "exit"]
    history = _cli(env, "history", NAME, "-w", "dev")
    assert history.exit_code == 0, history.output
    lines = [ln for ln in history.stdout.splitlines() if " monitor " in ln]
    assert any(f"drift found (x1, cat) on {N} rows" in ln for ln in lines), lines


def test_cli_no_drift_exits_0(env: dict[str, Any]) -> None:
    path = _csv(env, "cli-same", make_data(N, seed=11))
    res = _cli(
        env, "monitor", f"models:/{NAME}/{env['version']}", "--input", str(path), "--labels", "y"
    )
    assert res.exit_code == 0, res.output
    assert "no drift" in res.stdout and "accuracy" in res.stdout
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.split()[:1] == ["labelled_rows"]]
    assert rows and rows[0][1] == str(N)  # a count, not "143.0"
    history = _cli(env, "history", NAME, "-w", "dev").stdout.splitlines()
    assert any(" monitor " in ln and f"no drift on {N} rows" in ln for ln in history), history


def test_cli_baseline_command(env: dict[str, Any]) -> None:
    train = make_data(1000, seed=12)
    version = register(env["ws"], "viacli", fit_model(train), train, env["root"] / "viacli")
    path = _csv(env, "viacli", train)
    res = _cli(
        env, "baseline", f"models:/viacli/{version}", "--data", str(path), "--labels", "y", "--json"
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"] == 1000 and out["features"] == ["x1", "x2", "x3", "cat"]
    assert out["metrics"]["accuracy"] > 0.8
    assert load_baseline(env["ws"], "viacli", version)["rows"] == 1000


def test_cli_bad_input_and_bad_policy_are_one_line(env: dict[str, Any]) -> None:
    uri = f"models:/{NAME}/{env['version']}"
    res = _cli(env, "monitor", uri, "--input", str(env["root"] / "nope.csv"))
    assert res.exit_code == 1
    assert res.stderr.strip() == f"Error: Input '{env['root'] / 'nope.csv'}' does not exist"
    bad = env["root"] / "bad-policy.yaml"
    bad.write_text("actions: [tag, page_someone]\n", encoding="utf-8")
    path = _csv(env, "pol", make_data(100, seed=13))
    res = _cli(env, "monitor", uri, "--input", str(path), "--policy", str(bad))
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        f"Error: Policy {bad}: unknown action 'page_someone'. Actions: tag, exit, rollback, retrain"
    ]
    assert _cli(env, "monitor", uri).exit_code == 2  # --input is required


def test_reads_the_scoring_servers_input_logs(env: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from serving.input_log import InputLog

    folder = env["root"] / "server-logs"
    log = InputLog(folder, rotate_rows=1500, flush_seconds=60)
    df = make_data(6000, seed=14, x1_shift=1.0, cat_p=SHIFTED_CAT_P).drop(columns=["y"])
    for start in range(0, len(df), 100):  # one logged request per 100 rows
        chunk = df.iloc[start : start + 100]
        log(chunk, np.zeros(len(chunk), dtype=int), SimpleNamespace(version=env["version"]))
        if start == 3000:
            log.flush()  # a rotation: the folder holds several part files
    log.close()
    parts = sorted(folder.glob("*.parquet"))
    assert len(parts) >= 2
    assert {"prediction", "_ts", "_model_version"} <= set(pd.read_parquet(parts[0]).columns)
    result = monitor(
        env["ws"], f"models:/{NAME}/{env['version']}", [folder], policy=_no_actions(env)
    )
    assert result.rows == 6000
    assert {f["name"] for f in result.features if f["drift"]} == {"x1", "cat"}


def test_cli_baseline_without_labels_profiles_only_the_models_features(
    env: dict[str, Any],
) -> None:
    train = make_data(300, seed=14)
    version = register(env["ws"], "nolabels", fit_model(train), train, env["root"] / "nolabels")
    path = _csv(env, "nolabels", train)  # still holds the label column 'y'
    res = _cli(env, "baseline", f"models:/nolabels/{version}", "--data", str(path), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["features"] == ["x1", "x2", "x3", "cat"] and out["metrics"] == {}
    assert "y" not in load_baseline(env["ws"], "nolabels", version)["features"]
