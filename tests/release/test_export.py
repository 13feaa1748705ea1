"""``lifecycle release export`` (issue #17 item 7): a GitHub Actions workflow that actionlint
accepts, Azure ML schedules that azure-ai-ml's own loaders read back, an Azure Pipelines
definition with an environment per approval hop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from lifecycle.cli import cli

POLICY: dict[str, Any] = {
    "models": {
        "churn": {
            "source": "dev",
            "hops": [
                {"name": "staging", "to": "prod", "stage": "Staging"},
                {"name": "prod", "to": "dev2", "stage": "Production", "approval": "required"},
            ],
            "batch": [
                {
                    "name": "nightly",
                    "workspace": "dev2",
                    "model": "models:/churn/Production",
                    "input": "incoming/*.csv",
                    "output": "scored/{date}/",
                    "schedule": "0 2 * * *",
                    "azure": {
                        "endpoint": "churn-batch",
                        "deployment": "blue",
                        "input": "azureml://datastores/workspaceblobstore/paths/incoming/",
                        "compute": "cpu-cluster",
                    },
                }
            ],
        }
    }
}


@pytest.fixture
def policy(project_dir: Path) -> Path:
    (project_dir / "lifecycle.yaml").write_text(
        yaml.safe_dump({"workspaces": {"dev": {}, "prod": {}, "dev2": {}}})
    )
    path = project_dir / "release.yaml"
    path.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    return path


def _export(target: str, out: str) -> Result:
    return CliRunner().invoke(cli, ["release", "export", "--to", target, "--out", out])


def test_github_actions_workflow_passes_actionlint(policy: Path, project_dir: Path) -> None:
    result = _export("github-actions", "gh")
    assert result.exit_code == 0, result.output
    workflow = project_dir / "gh" / "release.yml"
    actionlint = Path(sys.executable).with_name("actionlint")
    lint = subprocess.run([str(actionlint), str(workflow)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    doc = yaml.safe_load(workflow.read_text())
    jobs = doc["jobs"]
    assert set(jobs) == {"plan", "apply", "approve-churn-prod"}
    assert jobs["approve-churn-prod"]["environment"] == "dev2"
    assert (
        "lifecycle release approve churn waiting --hop prod"
        in jobs["approve-churn-prod"]["steps"][-1]["run"]
    )
    assert doc["on"]["schedule"] == [{"cron": "0 2 * * *"}]  # written quoted: not yaml 1.1 True
    assert "lifecycle release run -f release.yaml --once" in jobs["apply"]["steps"][-1]["run"]


def test_azure_ml_schedules_read_back_with_the_sdk_loaders(policy: Path, project_dir: Path) -> None:
    from azure.ai.ml import load_job
    from azure.ai.ml.entities._load_functions import load_schedule

    result = _export("azure-ml", "aml")
    assert result.exit_code == 0, result.output
    schedule = load_schedule(str(project_dir / "aml" / "churn-nightly.schedule.yml"))
    assert schedule.trigger.expression == "0 2 * * *"
    assert str(schedule.trigger.time_zone).endswith("UTC")
    pipeline = load_job(str(project_dir / "aml" / "churn-nightly.pipeline.yml"))
    command = pipeline.jobs["invoke"].command
    assert "az ml batch-endpoint invoke --name churn-batch --deployment-name blue" in command
    assert "--input azureml://datastores/workspaceblobstore/paths/incoming/" in command


def test_azure_ml_export_names_a_job_without_its_azure_section(
    policy: Path, project_dir: Path
) -> None:
    doc = yaml.safe_load(policy.read_text())
    del doc["models"]["churn"]["batch"][0]["azure"]
    policy.write_text(yaml.safe_dump(doc))
    result = _export("azure-ml", "aml")
    assert result.exit_code == 1
    assert "batch job 'nightly' of churn has no 'azure' section" in result.output
    assert not list((project_dir / "aml").glob("*.yml"))


def test_azure_pipelines_puts_each_approval_hop_behind_an_environment(
    policy: Path, project_dir: Path
) -> None:
    result = _export("azure-pipelines", "ado")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((project_dir / "ado" / "azure-pipelines.yml").read_text())
    stages = {s["stage"]: s for s in doc["stages"]}
    assert set(stages) == {"plan", "apply", "approve_churn_prod"}
    (deploy,) = stages["approve_churn_prod"]["jobs"]
    assert deploy["environment"] == "dev2" and stages["approve_churn_prod"]["dependsOn"] == "apply"
    steps = deploy["strategy"]["runOnce"]["deploy"]["steps"]
    assert "lifecycle release approve churn waiting --hop prod" in steps[-1]["script"]
    assert doc["schedules"][0]["cron"] == "0 2 * * *"
