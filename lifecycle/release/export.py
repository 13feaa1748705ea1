"""A release policy written out for the orchestrators teams already run:

* ``azure-ml``: one Azure ML ``JobSchedule`` per batch job that has an ``azure`` section, whose
  pipeline invokes the job's batch endpoint on the job's cron (built with azure-ai-ml's
  entities, read back with its loaders before this returns);
* ``github-actions``: a workflow that plans on pull requests, runs the controller once on
  pushes to main, on the jobs' schedules and by hand, and puts each ``approval: required``
  hop behind a GitHub environment (whose required reviewers are the approval);
* ``azure-pipelines``: the same with Azure DevOps environments (approvals and checks).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.errors import DeploymentError, InvalidArgumentError
from lifecycle.release.policy import BatchJob, ReleasePolicy

logger = logging.getLogger(__name__)

TARGETS = ("azure-ml", "github-actions", "azure-pipelines")
#: The package the CI jobs install (the toolkit's wheel name).
PACKAGE = "mlflow-lifecycle"


def export(
    policy: ReleasePolicy, target: str, out_dir: str | Path, *, policy_path: str
) -> list[str]:
    """Write ``policy`` for ``target`` into ``out_dir``; the files written.

    Raises:
        InvalidArgumentError: an unknown target.
        DeploymentError: the policy lacks what the target needs (named), or azure-ai-ml's
            loaders refuse what was written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if target == "azure-ml":
        return _azure_ml(policy, out)
    if target == "github-actions":
        return [_write(out / "release.yml", _github(policy, policy_path))]
    if target == "azure-pipelines":
        return [_write(out / "azure-pipelines.yml", _azure_pipelines(policy, policy_path))]
    raise InvalidArgumentError(
        f"Unknown export target '{target}'. Value must be one of {', '.join(TARGETS)}"
    )


class _Dumper(yaml.SafeDumper):
    """No anchors for repeated steps; multi-line scripts as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def _write(path: Path, doc: dict[str, Any]) -> str:
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)
    path.write_text(text, encoding="utf-8")
    return str(path)


def _schedules(policy: ReleasePolicy) -> list[str]:
    crons: list[str] = []
    for m in policy.models:
        for schedule in [j.schedule for j in m.batch] + [j.schedule for j in m.monitors]:
            if schedule not in crons:
                crons.append(schedule)
    return crons


def _approval_hops(policy: ReleasePolicy) -> list[tuple[str, str, str]]:
    """(model, hop, target workspace) of every hop that needs an approval."""
    return [
        (m.name, h.name, h.to) for m in policy.models for h in m.hops if h.approval == "required"
    ]


def _approve_script(policy_path: str, model: str, hop: str, by: str) -> str:
    """Approve the version that waits for ``hop`` of ``model``, then apply."""
    f = shlex.quote(policy_path)
    return (
        f"lifecycle release approve {shlex.quote(model)} waiting --hop {shlex.quote(hop)} -f {f} "
        f'--by "{by}" --comment "approved through the {hop} environment"\n'
        f"lifecycle release apply -f {f}\n"
    )


_TRACKING_ENV = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN",
}


def _github(policy: ReleasePolicy, policy_path: str) -> dict[str, Any]:
    setup = [
        {"uses": "actions/checkout@v5"},
        {"uses": "actions/setup-python@v6", "with": {"python-version": "3.11"}},
        {"run": f"python -m pip install {PACKAGE}"},
    ]
    f = shlex.quote(policy_path)
    on: dict[str, Any] = {
        "pull_request": {"paths": [policy_path]},
        "push": {"branches": ["main"]},
        "workflow_dispatch": {},
    }
    crons = _schedules(policy)
    if crons:
        on["schedule"] = [{"cron": c} for c in crons]
    jobs: dict[str, Any] = {
        "plan": {
            "if": "github.event_name == 'pull_request'",
            "runs-on": "ubuntu-latest",
            "steps": [*setup, {"run": f"lifecycle release plan -f {f}"}],
        },
        "apply": {
            "if": "github.event_name != 'pull_request'",
            "runs-on": "ubuntu-latest",
            "steps": [*setup, {"run": f"lifecycle release run -f {f} --once"}],
        },
    }
    for model, hop, to in _approval_hops(policy):
        jobs[_job_id(f"approve-{model}-{hop}")] = {
            "if": "github.event_name != 'pull_request'",
            "needs": "apply",
            "runs-on": "ubuntu-latest",
            "environment": to,  # its required reviewers approve the hop
            "steps": [
                *setup,
                {
                    "name": f"approve what waits for {model} {hop}, then apply",
                    "env": {"APPROVER": "${{ github.actor }}"},
                    "run": _approve_script(policy_path, model, hop, "$APPROVER"),
                },
            ],
        }
    return {
        "name": "release",
        "on": on,
        "permissions": {"contents": "read"},
        "concurrency": {"group": "lifecycle-release", "cancel-in-progress": False},
        "env": {k: f"${{{{ secrets.{v} }}}}" for k, v in _TRACKING_ENV.items()},
        "jobs": jobs,
    }


def _job_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _azure_pipelines(policy: ReleasePolicy, policy_path: str) -> dict[str, Any]:
    setup = [
        {"task": "UsePythonVersion@0", "inputs": {"versionSpec": "3.11"}},
        {"script": f"python -m pip install {PACKAGE}", "displayName": "install"},
    ]
    f = shlex.quote(policy_path)
    env = {k: f"$({v})" for k, v in _TRACKING_ENV.items()}
    stages: list[dict[str, Any]] = [
        {
            "stage": "plan",
            "condition": "eq(variables['Build.Reason'], 'PullRequest')",
            "jobs": [
                {
                    "job": "plan",
                    "steps": [*setup, {"script": f"lifecycle release plan -f {f}", "env": env}],
                }
            ],
        },
        {
            "stage": "apply",
            "condition": "ne(variables['Build.Reason'], 'PullRequest')",
            "jobs": [
                {
                    "job": "apply",
                    "steps": [
                        *setup,
                        {"script": f"lifecycle release run -f {f} --once", "env": env},
                    ],
                }
            ],
        },
    ]
    for model, hop, to in _approval_hops(policy):
        stages.append(
            {
                "stage": _job_id(f"approve_{model}_{hop}").replace("-", "_"),
                "dependsOn": "apply",
                "condition": "and(succeeded(), ne(variables['Build.Reason'], 'PullRequest'))",
                "jobs": [
                    {
                        # The environment's approvals and checks are the hop's approval.
                        "deployment": _job_id(f"approve_{hop}").replace("-", "_"),
                        "environment": to,
                        "strategy": {
                            "runOnce": {
                                "deploy": {
                                    "steps": [
                                        {"checkout": "self"},
                                        *setup,
                                        {
                                            "script": _approve_script(
                                                policy_path, model, hop, "$(Build.RequestedFor)"
                                            ),
                                            "env": env,
                                            "displayName": f"approve {model} {hop}, then apply",
                                        },
                                    ]
                                }
                            }
                        },
                    }
                ],
            }
        )
    doc: dict[str, Any] = {
        "trigger": {"branches": {"include": ["main"]}},
        "pr": {"branches": {"include": ["main"]}, "paths": {"include": [policy_path]}},
        "pool": {"vmImage": "ubuntu-latest"},
        "stages": stages,
    }
    crons = _schedules(policy)
    if crons:
        doc["schedules"] = [
            {
                "cron": c,
                "displayName": f"release jobs {c}",
                "branches": {"include": ["main"]},
                "always": True,
            }
            for c in crons
        ]
    return doc


def _invoke_command(job: BatchJob) -> str:
    assert job.azure is not None
    a = job.azure
    parts = [
        "az extension add -n ml -y && az login --identity &&",
        "az ml batch-endpoint invoke",
        f"--name {shlex.quote(a.endpoint)}",
        *([f"--deployment-name {shlex.quote(a.deployment)}"] if a.deployment else []),
        f"--input {shlex.quote(a.input)} --input-type {a.input_type}",
        '--resource-group "$AZUREML_ARM_RESOURCEGROUP" --workspace-name "$AZUREML_ARM_WORKSPACE_NAME"',
    ]
    return " ".join(parts)


def _azure_ml(policy: ReleasePolicy, out: Path) -> list[str]:
    from azure.ai.ml import command, load_job
    from azure.ai.ml.entities import Environment, PipelineJob
    from azure.ai.ml.entities._load_functions import load_schedule

    jobs = [(m.name, j) for m in policy.models for j in m.batch]
    if not jobs:
        raise DeploymentError(f"{policy.path}: no batch job to schedule in Azure ML")
    files: list[str] = []
    for model, job in jobs:
        if job.azure is None:
            raise DeploymentError(
                f"{policy.path}: batch job '{job.name}' of {model} has no 'azure' section "
                "(endpoint, input, compute) to schedule in Azure ML"
            )
        name = _job_id(f"{model}-{job.name}")
        node = command(
            command=_invoke_command(job),
            environment=Environment(image="mcr.microsoft.com/azure-cli:latest"),
            compute=f"azureml:{job.azure.compute}",
            display_name=f"invoke {job.azure.endpoint}",
        )
        pipeline = PipelineJob(
            jobs={"invoke": node},
            display_name=f"{model} {job.name}",
            compute=f"azureml:{job.azure.compute}",
            tags={"lifecycle.release_digest": policy.digest, "lifecycle.model": model},
        )
        pipeline_file = out / f"{name}.pipeline.yml"
        pipeline.dump(str(pipeline_file))
        schedule = {
            "$schema": "https://azuremlschemas.azureedge.net/latest/schedule.schema.json",
            "name": name,
            "display_name": f"{model} {job.name} ({job.schedule} UTC)",
            "description": f"Written by lifecycle release export from {policy.path}",
            "trigger": {"type": "cron", "expression": job.schedule, "time_zone": "UTC"},
            "create_job": f"./{pipeline_file.name}",
            "tags": {"lifecycle.release_digest": policy.digest},
        }
        schedule_file = out / f"{name}.schedule.yml"
        _write(schedule_file, schedule)
        try:
            loaded = load_schedule(str(schedule_file))
            load_job(str(pipeline_file))
        except Exception as exc:
            raise DeploymentError(
                f"azure-ai-ml refused the schedule written for '{job.name}': {exc}".splitlines()[0]
            ) from exc
        if loaded.trigger.expression != job.schedule:  # type: ignore[union-attr]
            raise DeploymentError(
                f"the schedule of '{job.name}' did not read back as {job.schedule}"
            )
        files += [str(schedule_file), str(pipeline_file)]
    return files
