"""``lifecycle deploy kserve``: the ServingRuntime and the InferenceService are read back with
KServe's own model classes (kserve 0.16, in the cached ``peers`` environment: its pins cannot
share the toolkit's) and must survive their deserialize/serialize round trip unchanged; bad
names, quantities and restricted versions are refused with one line and write nothing."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from lifecycle.base.deployments import list_deployments
from lifecycle.base.restrict import NEEDS_RETRAINING_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from lifecycle.registry.versions import log_and_register
from tests.support.real.envs import ensure_env
from tests.support.serving_models import save_logreg

# In KServe's environment: the manifest as V1beta1InferenceService (the SDK's own
# deserializer raises on a wrong type or an unknown required shape), then back to a dict.
_ROUND_TRIP = """
import json, sys
import kserve.models, kubernetes.client.models
from kserve import V1alpha1ServingRuntime, V1beta1InferenceService
from kserve.api_client import ApiClient
# KServe's generated classes name Kubernetes' own (V1ObjectMeta, V1Container) by name;
# its deserializer looks names up in kserve.models only.
kserve.models.__getattr__ = lambda name: getattr(kubernetes.client.models, name)
runtime, isvc = json.load(open(sys.argv[1]))
api = ApiClient()
rt = api._ApiClient__deserialize(runtime, "V1alpha1ServingRuntime")
svc = api._ApiClient__deserialize(isvc, "V1beta1InferenceService")
assert isinstance(rt, V1alpha1ServingRuntime) and isinstance(svc, V1beta1InferenceService)
c = rt.spec.containers[0]
m = svc.spec.predictor.model
print(json.dumps({
    "back": [api.sanitize_for_serialization(rt), api.sanitize_for_serialization(svc)],
    "container": c.name, "image": c.image,
    "env": {e.name: e.value for e in c.env},
    "ready": c.readiness_probe.http_get.path,
    "live": c.liveness_probe.http_get.path,
    "protocols": rt.spec.protocol_versions,
    "formats": [(f.name, f.auto_select) for f in rt.spec.supported_model_formats],
    "model": [m.model_format.name, m.runtime, m.protocol_version, m.storage_uri],
    "min": svc.spec.predictor.min_replicas, "max": svc.spec.predictor.max_replicas,
}))
"""


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _kserve_reads(runtime: dict[str, Any], isvc: dict[str, Any], tmp_path: Path) -> Any:
    src = tmp_path / "kserve.json"
    src.write_text(json.dumps([runtime, isvc]))
    env = ensure_env("peers")
    proc = subprocess.run(
        [str(env / "bin" / "python"), "-c", _ROUND_TRIP, str(src)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def registered(dev: Workspace, tmp_path: Path) -> Workspace:
    log_and_register(dev, save_logreg(tmp_path / "m"), "churn", experiment="t", trust_pickle=True)
    return dev


def test_the_service_round_trips_through_kserves_own_classes(
    registered: Workspace, project_dir: Path, tmp_path: Path
) -> None:
    result = _run(
        "deploy", "kserve", "churn", "--version", "1", "--image", "registry.example.com/churn:1",
        "--namespace", "models", "--max-replicas", "3", "--cpu", "500m", "--memory", "1Gi",
        "--out", "k8s", "-w", "dev", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["service"], out["namespace"]) == ("churn-v1", "models")
    manifest = yaml.safe_load((project_dir / "k8s" / "inferenceservice.yaml").read_text())
    runtime = yaml.safe_load((project_dir / "k8s" / "servingruntime.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    assert (runtime["apiVersion"], runtime["kind"]) == (
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
    )

    read = _kserve_reads(runtime, manifest, tmp_path)
    # Nothing KServe's classes do not know, nothing lost.
    assert read["back"] == [runtime, manifest]
    assert (read["container"], read["image"]) == (
        "kserve-container",
        "registry.example.com/churn:1",
    )
    assert read["protocols"] == ["v2"]
    assert read["formats"] == [["mlflow-lifecycle", False]]  # never picked by other services
    assert read["model"] == ["mlflow-lifecycle", "churn-v1", "v2", None]  # the model is baked in
    assert read["env"]["LIFECYCLE_SERVE_MODEL_NAME"] == "churn"
    assert read["env"]["LIFECYCLE_SERVE_MODEL_VERSION"] == "1"
    assert (read["ready"], read["live"]) == ("/v2/health/ready", "/v2/health/live")
    assert (read["min"], read["max"]) == (1, 3)
    digest = registered.client().get_model_version("churn", "1").tags["lifecycle.content_digest"]
    assert manifest["metadata"]["annotations"]["mlflow-lifecycle/digest"] == digest
    # The round trip is a real check: a field KServe does not know is dropped by it.
    typo = copy.deepcopy(manifest)
    typo["spec"]["predictor"]["model"]["protocolversion"] = "v2"
    back = _kserve_reads(runtime, typo, tmp_path)["back"][1]
    assert "protocolversion" not in back["spec"]["predictor"]["model"]
    assert back["spec"]["predictor"]["model"]["protocolVersion"] == "v2"

    [dep] = list_deployments(registered, "churn", "1")
    assert (dep["kind"], dep["target"]) == ("kserve", "models/churn-v1")


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (["--service", "Churn_Prod"], "Invalid InferenceService name 'Churn_Prod'"),
        (["--service", "a" * 64], "at most 63 characters"),
        (["--cpu", "lots"], "Invalid cpu 'lots'"),
        (["--memory", "2 GB"], "Invalid memory '2 GB'"),
        (["--namespace", "Prod"], "Invalid namespace 'Prod'"),
        (["--min-replicas", "3", "--max-replicas", "2"], "Invalid replicas min 3 / max 2"),
    ],
)
def test_bad_values_are_one_line_errors_and_write_nothing(
    registered: Workspace, project_dir: Path, args: list[str], bad: str
) -> None:
    result = _run(
        "deploy", "kserve", "churn", "--version", "1", "--image", "r/churn:1", "--out", "k8s",
        "-w", "dev", *args,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and bad in errors[0], result.output
    assert not (project_dir / "k8s").exists()
    assert list_deployments(registered, "churn", "1") == []


def test_a_missing_version_and_a_restricted_one_are_refused(
    registered: Workspace, project_dir: Path
) -> None:
    missing = _run("deploy", "kserve", "churn", "--version", "9", "--image", "r/c:9", "-w", "dev")
    assert missing.exit_code == 1 and "churn" in missing.output and "9" in missing.output
    registered.client().set_model_version_tag("churn", "1", NEEDS_RETRAINING_TAG, "true")
    args = ["deploy", "kserve", "churn", "--version", "1", "--image", "r/c:1", "-w", "dev"]
    refused = _run(*args)
    assert refused.exit_code == 1 and "needs_retraining" in refused.output, refused.output
    assert not (project_dir / "kserve").exists()
    allowed = _run(*args, "--allow-restricted")
    assert allowed.exit_code == 0, allowed.output
    assert (project_dir / "kserve" / "inferenceservice.yaml").is_file()
