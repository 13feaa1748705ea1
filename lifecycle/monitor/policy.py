"""Monitoring policies: when drift counts, and what to do about it.

A policy is a YAML file with two keys, both optional::

    thresholds:                 # lifecycle.monitor.drift.Thresholds
      psi: 0.25                 # any feature's PSI above this is drift
      ks_pvalue: 0.01           # numeric: KS p below this / columns judged (Bonferroni) ...
      chi2_pvalue: 0.01         # categorical: chi-square p below this / columns judged ...
      min_effect: 0.1           # ... and a KS distance / TVD of at least this
      missing_rate: 0.1         # any feature missing more often than this
      missing_rate_increase: 0.05
      prediction_psi: 0.25
      metric_drop: {accuracy: 0.05, f1: 0.05, r2: 0.1}
      min_drifted_features: 1
      type_error_rate: 0.0      # data quality: share of non-numbers in a numeric column
      out_of_range: 0.05        # data quality: share outside the baseline's min..max
      min_rows: 30              # a column with fewer new values is not judged (exit 4 if none is)
      psi_pvalue: 0.01          # PSI must also exceed what baseline-sized noise reaches this often
      missing_pvalue: 0.01      # missing-rate rules need a binomial test below this
    actions:                    # done in this order when drift is found
      - tag                     # tag the version needs_retraining=true
      - rollback                # archive it; the stage's previous holder takes it back
      - retrain:                # mlflow run an entry point (env manager: local)
          uri: .
          entry_point: train
          parameters: {workspace: "{workspace}", model: "{model}"}
          experiment: retraining
      - exit                    # the monitor command exits with code 3

Without a file the default policy applies: the thresholds above, actions ``tag`` and ``exit``.
Parameter values of ``retrain`` may use ``{model}``, ``{version}``, ``{workspace}``,
``{model_uri}``, ``{inputs}`` and ``{run_id}`` (the monitor run). Every action is recorded in
the model's audit history (:mod:`lifecycle.base.audit`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.audit import record_event
from lifecycle.base.errors import ConfigError, LifecycleError
from lifecycle.base.tags import NEEDS_RETRAINING_REASON_TAG, NEEDS_RETRAINING_TAG
from lifecycle.base.workspaces import Workspace
from lifecycle.monitor.drift import Thresholds

logger = logging.getLogger(__name__)

DRIFT_EXIT_CODE = 3
ACTIONS = ("tag", "exit", "rollback", "retrain")
_ACTION_OPTIONS: dict[str, set[str]] = {
    "tag": set(),
    "exit": set(),
    "rollback": {"stage"},
    "retrain": {"uri", "entry_point", "parameters", "experiment", "version"},
}


@dataclass
class Action:
    """One action of a policy and its options."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Policy:
    """Thresholds and the actions taken when they are crossed."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    actions: list[Action] = field(default_factory=lambda: [Action("tag"), Action("exit")])
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "source": self.source or "default",
            "thresholds": self.thresholds.to_dict(),
            "actions": [{a.kind: a.options} if a.options else a.kind for a in self.actions],
        }


def default_policy() -> Policy:
    """The policy in force without a file: default thresholds, tag the version, exit 3."""
    return Policy(source="default")


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """Read a policy file (the default policy when ``path`` is None).

    Raises:
        ConfigError: the file is missing, not YAML, or names unknown keys, actions or
            options (the message lists the allowed ones).
    """
    if path is None or str(path) == "":
        return default_policy()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Policy file '{p}' does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Policy file '{p}' is not valid YAML: {exc}".splitlines()[0]) from exc
    return policy_from_dict(raw, source=str(p), base_dir=p.resolve().parent)


def policy_from_dict(raw: Any, source: str = "<dict>", base_dir: Path | None = None) -> Policy:
    """Build a :class:`Policy` from its YAML structure.

    A ``retrain`` action's local ``uri`` is resolved against ``base_dir`` (the policy file's
    folder; the current directory for a dict) and must be an MLflow project declaring the
    entry point.

    Raises:
        ConfigError: unknown keys, actions, options or non-numeric thresholds.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"Policy {source} must be a mapping with 'thresholds' and 'actions'")
    unknown = set(raw) - {"thresholds", "actions"}
    if unknown:
        raise ConfigError(
            f"Policy {source} has unknown key(s) {', '.join(sorted(map(str, unknown)))}. "
            "Allowed: actions, thresholds"
        )
    thresholds = Thresholds()
    allowed = {f.name for f in dataclasses.fields(Thresholds)}
    for key, value in (raw.get("thresholds") or {}).items():
        if key not in allowed:
            raise ConfigError(
                f"Policy {source}: unknown threshold '{key}'. Allowed: {', '.join(sorted(allowed))}"
            )
        if key == "metric_drop":
            if not isinstance(value, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
            ):
                raise ConfigError(
                    f"Policy {source}: 'metric_drop' must map metric names to numbers, got {value!r}"
                )
            setattr(thresholds, key, {str(k): float(v) for k, v in value.items()})
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"Policy {source}: threshold '{key}' must be a number, got {value!r}")
        setattr(
            thresholds,
            key,
            int(value) if key in ("min_drifted_features", "min_rows") else float(value),
        )
    actions_raw = raw.get("actions")
    if actions_raw is None:
        actions = [Action("tag"), Action("exit")]
    elif not isinstance(actions_raw, list):
        raise ConfigError(f"Policy {source}: 'actions' must be a list, got {actions_raw!r}")
    else:
        actions = [_parse_action(item, source, base_dir or Path.cwd()) for item in actions_raw]
    return Policy(thresholds=thresholds, actions=actions, source=source)


def _parse_action(item: Any, source: str, base_dir: Path) -> Action:
    options: Any
    if isinstance(item, str):
        kind, options = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, options = next(iter(item.items()))
        options = options or {}
    else:
        raise ConfigError(
            f"Policy {source}: action {item!r} must be a name or a one-key mapping "
            f"name -> options. Actions: {', '.join(ACTIONS)}"
        )
    if kind not in ACTIONS:
        raise ConfigError(
            f"Policy {source}: unknown action '{kind}'. Actions: {', '.join(ACTIONS)}"
        )
    if not isinstance(options, dict):
        raise ConfigError(f"Policy {source}: options of action '{kind}' must be a mapping")
    bad = set(options) - _ACTION_OPTIONS[kind]
    if bad:
        raise ConfigError(
            f"Policy {source}: unknown option(s) {', '.join(sorted(map(str, bad)))} of action "
            f"'{kind}'. Allowed: {', '.join(sorted(_ACTION_OPTIONS[kind])) or 'none'}"
        )
    if kind == "retrain":
        if not options.get("entry_point"):
            raise ConfigError(f"Policy {source}: action 'retrain' needs an 'entry_point'")
        options = {**options, "uri": _project_uri(options, source, base_dir)}
    return Action(kind, dict(options))


def _project_uri(options: dict[str, Any], source: str, base_dir: Path) -> str:
    """The retrain action's project: a git/remote URI as given, a local folder resolved
    against the policy's folder and checked to declare the entry point.

    Raises:
        ConfigError: the folder is missing, has no MLproject, or lacks the entry point.
    """
    uri = str(options.get("uri") or ".")
    if "://" in uri or uri.startswith("git@"):
        return uri
    folder = (base_dir / uri).resolve()
    entry = str(options["entry_point"])
    where = f"retrain uri '{uri}' ({folder}, relative to the policy's folder)"
    mlproject = next((f for f in (folder / "MLproject", folder / "mlproject") if f.is_file()), None)
    if mlproject is None:
        raise ConfigError(
            f"Policy {source}: {where} is not an MLflow project (no MLproject file); "
            "expected the folder of the project that retrains, or a git URI"
        )
    try:
        spec = yaml.safe_load(mlproject.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Policy {source}: {mlproject} is not valid YAML: {exc}") from exc
    declared = sorted((spec.get("entry_points") or {}) if isinstance(spec, dict) else {})
    if entry not in declared and not (folder / entry).is_file():
        raise ConfigError(
            f"Policy {source}: {where} has no entry point '{entry}'; "
            f"its MLproject declares: {', '.join(declared) or 'none'}"
        )
    return str(folder)


@dataclass
class ActionContext:
    """What an action needs to know about the monitoring that triggered it."""

    ws: Workspace
    name: str
    version: str
    model_uri: str
    reasons: list[str]
    inputs: list[str] = field(default_factory=list)
    run_id: str | None = None


def apply_actions(policy: Policy, ctx: ActionContext) -> tuple[list[dict[str, Any]], int]:
    """Carry out the policy's actions after drift was found; record each in the audit history.

    An action that cannot be done (no earlier version to roll back to, a failed retraining
    run) is reported with ``status`` ``skipped`` or ``failed`` and recorded, and the others
    still run.

    Returns:
        The action records (``action``, ``status`` and facts) and the exit code (3 when the
        policy has ``exit``, else 0).
    """
    done: list[dict[str, Any]] = []
    exit_code = 0
    for action in policy.actions:
        handler = _HANDLERS[action.kind]
        try:
            record = handler(action, ctx)
        except LifecycleError as exc:
            record = {"action": action.kind, "status": "failed", "error": str(exc)}
        if action.kind == "exit":
            exit_code = DRIFT_EXIT_CODE
        record_event(
            ctx.ws,
            ctx.name,
            action.kind,
            version=record.pop("_audit_version", ctx.version),
            details={
                **{k: v for k, v in record.items() if k != "action"},
                "trigger": "monitor",
                "monitored_version": ctx.version,
                "monitor_run_id": ctx.run_id,
                "reasons": ctx.reasons[:10],
            },
        )
        done.append(record)
    return done, exit_code


def _tag(action: Action, ctx: ActionContext) -> dict[str, Any]:
    client = ctx.ws.client()
    reason = "; ".join(ctx.reasons)[:4000] or "drift"
    client.set_model_version_tag(ctx.name, ctx.version, NEEDS_RETRAINING_TAG, "true")
    client.set_model_version_tag(ctx.name, ctx.version, NEEDS_RETRAINING_REASON_TAG, reason)
    return {"action": "tag", "status": "done", "tag": NEEDS_RETRAINING_TAG, "value": "true"}


def _exit(action: Action, ctx: ActionContext) -> dict[str, Any]:
    return {"action": "exit", "status": "done", "exit_code": DRIFT_EXIT_CODE}


def _rollback(action: Action, ctx: ActionContext) -> dict[str, Any]:
    from lifecycle.base.errors import ModelNotFoundError
    from lifecycle.registry.stages import current_stage, rollback, versions_in_stage

    stage = action.options.get("stage") or current_stage(ctx.ws, ctx.name, ctx.version)
    if stage not in ("Staging", "Production") or ctx.version not in versions_in_stage(
        ctx.ws, ctx.name, stage
    ):
        return {
            "action": "rollback",
            "status": "skipped",
            "reason": f"version {ctx.version} does not hold stage {stage}",
        }
    try:
        result = rollback(ctx.ws, ctx.name, stage, record=False)
    except ModelNotFoundError as exc:
        # Archiving without a successor would leave the stage empty and break its consumers.
        return {"action": "rollback", "status": "skipped", "reason": str(exc)}
    return {
        "action": "rollback",
        "status": "done",
        "_audit_version": result["to_version"],
        "from_version": result["from_version"],
        "to_version": result["to_version"],
        "to_stage": stage,
        "archived": result["archived"],
    }


def _retrain(action: Action, ctx: ActionContext) -> dict[str, Any]:
    import mlflow.projects

    from lifecycle.base.workspaces import (
        get_or_create_experiment,
        same_workspaces_env,
        use_workspace,
    )

    values = {
        "model": ctx.name,
        "version": ctx.version,
        "workspace": ctx.ws.name,
        "model_uri": ctx.model_uri,
        "inputs": ",".join(ctx.inputs),
        "run_id": ctx.run_id or "",
    }
    params = {str(k): _fill(v, values) for k, v in (action.options.get("parameters") or {}).items()}
    uri = str(action.options.get("uri") or ".")
    entry_point = str(action.options["entry_point"])
    experiment = str(action.options.get("experiment") or "lifecycle-retraining")
    record: dict[str, Any] = {
        "action": "retrain",
        "uri": uri,
        "entry_point": entry_point,
        "parameters": params,
    }
    try:
        get_or_create_experiment(ctx.ws, experiment)
        # The project runs in its own folder: its `-w {workspace}` must name the same
        # workspaces as this process (same configuration file or embedded home).
        with use_workspace(ctx.ws), same_workspaces_env():
            submitted = mlflow.projects.run(
                uri,
                entry_point=entry_point,
                version=action.options.get("version"),
                parameters=params,
                experiment_name=experiment,
                env_manager="local",
                synchronous=True,
            )
        record.update(status="done", run_id=submitted.run_id, run_status=submitted.get_status())
    except Exception as exc:  # a failed retraining is reported and recorded, not fatal
        logger.warning("retraining %s failed: %s", entry_point, exc)
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    return record


def _fill(value: Any, values: dict[str, str]) -> str:
    text = str(value)
    for key, sub in values.items():
        text = text.replace("{" + key + "}", sub)
    return text


_HANDLERS = {"tag": _tag, "exit": _exit, "rollback": _rollback, "retrain": _retrain}
