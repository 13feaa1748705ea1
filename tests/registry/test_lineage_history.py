"""Lineage across renamed/missing workspaces and the promote command's output and errors."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from lifecycle.base.audit import read_history
from lifecycle.base.workspaces import load_config
from lifecycle.cli import cli
from lifecycle.registry.lineage import find_workspace, lineage
from lifecycle.registry.versions import log_and_register


def test_promote_cli_then_lineage_after_workspace_rename(
    project_dir: Path, model_dir: Path
) -> None:
    config = load_config()
    dev = config.get("dev")
    v = log_and_register(
        dev, model_dir, "ren", experiment="t", metrics={"accuracy": 0.96}, trust_pickle=True
    ).version
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "promote",
            "ren",
            "--version",
            v,
            "--from",
            "dev",
            "--to",
            "prod",
            "--stage",
            "staging",
            "--gate",
            "accuracy>=0.9",
            "--no-smoke",
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "ren version 1 in prod: Staging"
    assert lines[1] == "from dev ren version 1"
    assert lines[2].split() == ["GATE", "VALUE", "THRESHOLD", "RESULT", "DETAIL"]
    assert lines[3].split()[:5] == ["accuracy>=0.9", "0.96", ">=", "0.9", "pass"]
    # The dev store is renamed "development" in the configuration: found by its URI.
    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump({"workspaces": {"development": {"tracking_uri": dev.tracking_uri}}}),
        encoding="utf-8",
    )
    renamed = load_config()
    chain = lineage(renamed, renamed.get("prod"), "ren", "1")
    assert [(h["workspace"], h["found_by"]) for h in chain] == [("prod", "given"), ("dev", "uri")]
    assert chain[1]["tracking_uri"] == dev.tracking_uri
    ws, how = find_workspace(renamed, "dev", dev.tracking_uri)
    assert ws is not None and ws.tracking_uri == dev.tracking_uri and how == "uri"
    hist = runner.invoke(cli, ["history", "ren", "-w", "prod", "--json"])
    events = json.loads(hist.stdout)
    assert events[-1]["action"] == "promote" and events[-1]["gates"][0]["value"] == 0.96
    assert read_history(dev, "ren")[-1]["action"] == "gate"


def test_lineage_ends_at_unreachable_source(project_dir: Path, model_dir: Path) -> None:
    from lifecycle.registry.promote import promote

    config = load_config()
    dev, prod = config.get("dev"), config.get("prod")
    v = log_and_register(dev, model_dir, "gone", experiment="t", trust_pickle=True).version
    promote(dev, prod, "gone", version=v, smoke=False)
    # A configuration whose "dev" is another store (the original was lost): the chain ends
    # with what the tags recorded.
    (project_dir / "lifecycle.yaml").write_text("home: elsewhere\n", encoding="utf-8")
    moved = load_config()
    assert moved.get("dev").tracking_uri != dev.tracking_uri
    chain = lineage(moved, prod, "gone", "1")
    assert chain[0]["reachable"] and chain[1]["reachable"] is False
    assert (chain[1]["workspace"], chain[1]["version"]) == ("dev", v)
    assert chain[1]["reason"] == "version not found" and chain[1]["found_by"] == "name"


def test_promote_cli_errors(project_dir: Path, model_dir: Path) -> None:
    config = load_config()
    v = log_and_register(
        config.get("dev"), model_dir, "err", experiment="t", trust_pickle=True
    ).version
    runner = CliRunner()
    base = ["promote", "err", "--from", "dev", "--to", "prod"]
    r = runner.invoke(cli, [*base, "--version", v, "--stage", "live"])
    assert r.exit_code == 1
    assert "Invalid stage 'live'. Value must be one of None, Staging, Production" in r.stderr
    r = runner.invoke(cli, ["promote", "nope", "--version", "1", "--from", "dev", "--to", "prod"])
    assert (
        r.exit_code == 1 and "Registered model 'nope' does not exist in workspace 'dev'" in r.stderr
    )
    r = runner.invoke(cli, [*base, "--version", "9"])
    assert r.exit_code == 1 and "Version '9' of model 'err' does not exist" in r.stderr
    r = runner.invoke(cli, [*base, "--alias", "champion"])
    assert r.exit_code == 1 and "Alias 'champion' of model 'err' does not exist" in r.stderr
    r = runner.invoke(cli, [*base, "--version", v, "--to", "nowhere"])
    assert r.exit_code == 1 and "Unknown workspace 'nowhere'" in r.stderr
    assert runner.invoke(cli, base).exit_code == 2  # no selector: usage error
    r = runner.invoke(cli, [*base, "--version", v, "--holdout", "x.csv"])
    assert r.exit_code == 1 and "--holdout and --target go together" in r.stderr
    assert load_config().get("prod").client().search_registered_models() == []
