"""The baseline travels with the model: stored at import from the user's sample, carried by a
promotion (which copies the run's artifacts), and usable by ``monitor`` in the target."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lifecycle.base.tags import BASELINE_TAG
from lifecycle.base.workspaces import Config, Workspace
from lifecycle.imports import import_notebook
from lifecycle.monitor import load_baseline
from lifecycle.monitor.monitor import monitor
from lifecycle.monitor.status import status
from lifecycle.registry.promote import promote
from tests.support.origins import build_notebook


def test_import_with_sample_stores_a_baseline_that_promotion_carries(
    tmp_path: Path, config: Config, dev: Workspace, prod: Workspace
) -> None:
    origin = build_notebook(tmp_path / "nb", "skops")
    res = import_notebook(dev, origin.path, "nbmodel", sample=origin.sample_csv, target="target")
    assert res.created
    base = load_baseline(dev, "nbmodel", res.version)
    sample = pd.read_csv(origin.sample_csv)
    assert base["rows"] == len(sample) == 180
    assert "target" not in base["feature_order"]
    assert base["features"]["color"]["kind"] == "categorical"
    assert base["features"]["color"]["missing_rate"] > 0
    assert base["features"]["age"]["kind"] == "numeric"
    assert base["task"] == "classification" and base["metrics"]["accuracy"] > 0.7
    assert dev.client().get_model_version("nbmodel", res.version).tags[BASELINE_TAG]

    promoted = promote(dev, prod, "nbmodel", version=res.version, smoke=False)
    assert promoted.version is not None
    assert load_baseline(prod, "nbmodel", promoted.version) == base
    (row,) = status(config, "prod")["workspaces"]
    (model,) = row["models"]
    assert model["versions"][0]["baseline"] is True
    holdout = tmp_path / "holdout.csv"
    origin.holdout.to_csv(holdout, index=False)
    result = monitor(prod, "models:/nbmodel/Production", [holdout], policy=_quiet(tmp_path))
    assert result.version == promoted.version and result.rows == len(origin.holdout)


def test_import_without_sample_still_works_without_baseline(tmp_path: Path, dev: Workspace) -> None:
    origin = build_notebook(tmp_path / "nb", "skops", seed=1)
    res = import_notebook(dev, origin.path, "nosample")
    assert res.created
    assert BASELINE_TAG not in dev.client().get_model_version("nosample", res.version).tags


def _quiet(tmp_path: Path) -> Path:
    path = tmp_path / "quiet.yaml"
    path.write_text("actions: []\n", encoding="utf-8")
    return path


def test_import_with_holdout_makes_its_metrics_the_baseline_that_monitoring_compares_with(
    tmp_path: Path, dev: Workspace
) -> None:
    """Issue #22 item 2: the holdout used at import must show no change when monitored;
    the training sample's (optimistic) metrics stay in the profile as ``sample_metrics``."""
    from lifecycle.imports import import_model
    from tests.support.origins import notebook_data

    origin = build_notebook(tmp_path / "nb", "skops", seed=2)
    _, labels = notebook_data(seed=2)
    holdout = tmp_path / "holdout.csv"
    origin.holdout.assign(target=labels.iloc[180:].values).to_csv(holdout, index=False)
    res = import_model(
        dev, origin.path, "held", sample=origin.sample_csv, target="target", holdout=holdout
    )
    base = load_baseline(dev, "held", res.version)
    run_metrics = dev.client().get_run(res.run_id).data.metrics
    assert base["metrics_source"] == "holdout holdout.csv"
    assert base["metrics"]["accuracy"] == round(run_metrics["accuracy"], 6)
    assert base["sample_metrics"]["accuracy"] != base["metrics"]["accuracy"]
    result = monitor(
        dev, f"models:/held/{res.version}", [holdout], labels="target", policy=_quiet(tmp_path)
    )
    assert result.metric_changes and all(v == 0 for v in result.metric_changes.values())
