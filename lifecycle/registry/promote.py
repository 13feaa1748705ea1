"""Promotion of a model version from one workspace to another: gated, idempotent, atomic.

``promote`` is the only way a version crosses workspaces:

1. resolve the source version (by version, stage or alias), including MLflow 3 versions whose
   ``source`` is a logged model (``models:/m-<id>``);
2. download the model and the source run's other artifacts, and run every gate (metric
   thresholds, holdout comparison with the target's champion, smoke test in a fresh process)
   before anything is written to the target; a failing gate raises
   :class:`~lifecycle.base.errors.GateFailedError` carrying the gate table;
3. deep-copy into the target: a run of its own (params, full metric history, tags, artifacts)
   in the experiment ``promoted/<name>``, and a version registered from that run's artifacts
   (:func:`lifecycle.registry.versions.log_and_register`), tagged with its lineage;
4. check that the target serves every file at its full size, move the version to the
   requested stage, and record the promotion in the target's audit history.

A source version whose digest already exists in the target is reused (the stage is still
applied) unless ``force``. The write phase runs under the target model's lock
(:mod:`lifecycle.base.locks`) and is journalled (:mod:`lifecycle.registry.journal`): if
anything fails after the target was written, or SIGTERM/SIGINT arrives, the journal's undo
(:mod:`lifecycle.registry.repair`) deletes what was created, with the run's artifacts, and
puts the stage holders back, and the error names whatever it could not remove. A promotion
killed outright is finished or undone by the next promotion or by ``lifecycle repair``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.base.audit import current_user, record_event, utcnow
from lifecycle.base.consent import require_consent
from lifecycle.base.digest import model_digest
from lifecycle.base.errors import (
    GateFailedError,
    InvalidArgumentError,
    LifecycleError,
    ModelNotFoundError,
    PromotionError,
)
from lifecycle.base.faults import fault_point
from lifecycle.base.locks import model_lock
from lifecycle.base.refs import ModelRef, canonical_stage, resolve_model
from lifecycle.base.tags import (
    DIGEST_TAG,
    PICKLE_CONSENT_TAG,
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
    PROMOTION_ID_TAG,
    SOURCE_MODEL_TAG,
    SOURCE_REGISTRY_URI_TAG,
    SOURCE_RUN_TAG,
    SOURCE_TRACKING_URI_TAG,
    SOURCE_VERSION_TAG,
    SOURCE_WORKSPACE_TAG,
)
from lifecycle.base.workspaces import Workspace
from lifecycle.registry.copy import (
    Progress,
    download_model,
    download_run_artifacts,
    run_data,
    upload_progress,
    user_version_tags,
    verify_copy,
)
from lifecycle.registry.gates import (
    GateResult,
    check_holdout,
    check_metric_gates,
    holdout_gate,
    parse_gate,
)
from lifecycle.registry.journal import STEPS, Journal, new_promotion_id, repair_command
from lifecycle.registry.repair import RepairOutcome, repair_unlocked, undo
from lifecycle.registry.smoke import SmokeTest
from lifecycle.registry.stages import move_stage, versions_in_stage
from lifecycle.registry.versions import find_version_by_tag, log_and_register

logger = logging.getLogger(__name__)


@dataclass
class PromotionResult:
    """What a promotion did (or, with ``dry_run``, would do)."""

    name: str
    source: dict[str, Any]
    target_workspace: str
    version: str | None
    run_id: str | None
    digest: str
    created: bool
    stage: str | None
    archived: list[str] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    holdout: dict[str, Any] | None = None
    dry_run: bool = False
    plan: list[str] = field(default_factory=list)
    repaired: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no gate failed."""
        return all(g.passed is not False for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "name": self.name,
            "source": self.source,
            "target": {
                "workspace": self.target_workspace,
                "version": self.version,
                "run_id": self.run_id,
                "stage": self.stage,
                "created": self.created,
                "archived": self.archived,
            },
            "digest": self.digest,
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "holdout": self.holdout,
            "dry_run": self.dry_run,
            "plan": self.plan,
            "repaired": self.repaired,
        }


def promote(
    src_ws: Workspace,
    dst_ws: Workspace,
    name: str,
    *,
    version: str | int | None = None,
    stage: str | None = None,
    alias: str | None = None,
    target_stage: str | None = "Production",
    gates: Iterable[str] = (),
    holdout: str | Path | None = None,
    target: str | None = None,
    metric: str | None = None,
    min_delta: float = 0.0,
    dry_run: bool = False,
    force: bool = False,
    smoke: bool = True,
    progress: Progress | None = None,
    before_register: Callable[[str], None] | None = None,
    before_stage: Callable[[str], None] | None = None,
) -> PromotionResult:
    """Promote ``name`` (one version of it) from ``src_ws`` into ``dst_ws``.

    Args:
        src_ws, dst_ws: source and target workspaces (must differ).
        name: registered model name (the same name is used in the target).
        version, stage, alias: exactly one selects the source version.
        target_stage: stage for the target version (None or "None": leave it unstaged).
        gates: metric thresholds on the source run (``accuracy>=0.9``).
        holdout, target, metric, min_delta: labelled CSV, its label column, the metric to
            compare with the target's champion, and how much worse the candidate may be.
        dry_run: run the gates and report the plan; write nothing anywhere.
        force: register a new version even if one with the same content digest exists.
        smoke: run the fresh-process smoke test gate.
        progress: byte-progress callback for downloads and uploads (the CLI draws a bar).
        before_register: called with the target run id after the upload, before registration.
        before_stage: called with the target version before the stage move.

    Returns:
        A :class:`PromotionResult`.

    Raises:
        InvalidArgumentError: bad selector, gate expression, holdout options or stage.
        ModelNotFoundError: the source model/version/stage/alias does not exist.
        GateFailedError: a gate failed; nothing was written to the target
            (``exc.results`` holds the gate table, ``exc.result`` the PromotionResult).
        PromotionError: writing to the target failed; what was created was rolled back.
    """
    selectors = [s for s in (version, stage, alias) if s not in (None, "")]
    if len(selectors) != 1:
        raise InvalidArgumentError(
            "Select the source version with exactly one of --version, --stage or --alias "
            f"(got {len(selectors)})"
        )
    if (holdout is None) != (target is None):
        raise InvalidArgumentError("--holdout and --target go together: give both or neither")
    if _same_workspace(src_ws, dst_ws):
        raise InvalidArgumentError(
            f"Source and target are the same workspace ('{src_ws.name}'); use "
            "'lifecycle transition' to change a stage within one workspace"
        )
    stage_to = canonical_stage(target_stage) if target_stage else "None"
    gate_exprs = [parse_gate(g) for g in gates]
    if holdout is not None and target is not None:
        check_holdout(holdout, target, metric)
    if stage is not None:
        ref = ModelRef(name=name, stage=canonical_stage(stage))
    elif alias is not None:
        ref = ModelRef(name=name, alias=str(alias))
    else:
        if not str(version).isdigit():
            raise InvalidArgumentError(f"Invalid version '{version}': expected a number")
        ref = ModelRef(name=name, version=str(version))
    src = resolve_model(src_ws, ref)
    src_version = str(src.version)
    source_uri = str(src.source or "")
    if source_uri.startswith("models:/m-") and src_ws.supports_logged_models is False:
        raise PromotionError(
            f"{name} v{src_version} in '{src_ws.name}' is stored as an MLflow logged model "
            f"({source_uri}) but the workspace has no logged-model API"
        )
    src_client = src_ws.client()
    run = _get_run(src_client, src.run_id)
    source_info = {
        "workspace": src_ws.name,
        "tracking_uri": src_ws.tracking_uri,
        "name": name,
        "version": src_version,
        "stage": src.stage,
        "run_id": src.run_id,
        "model_source": source_uri,
        "selected_by": str(ref),
    }

    # The smoke test's fresh process starts now: its imports overlap the download.
    with (
        tempfile.TemporaryDirectory(prefix="lifecycle-promote-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        smoker = stack.enter_context(SmokeTest()) if smoke else None
        model_dir = Path(tmp) / "model"
        started = time.perf_counter()
        download_model(src_ws, name, src_version, model_dir, progress)
        # The gates load it (the smoke test in a fresh process): only with recorded consent.
        consent = (getattr(src.model_version, "tags", None) or {}).get(PICKLE_CONSENT_TAG)
        require_consent(str(model_dir), recorded=consent, name=name, version=src_version,
                        workspace=src_ws.name)  # fmt: skip
        run_artifacts = download_run_artifacts(src_ws, run, source_uri, Path(tmp) / "run", progress)
        digest = model_digest(model_dir)
        logger.info("downloaded and hashed the source in %.1fs", time.perf_counter() - started)
        existing = None if force else find_version_by_tag(dst_ws, name, DIGEST_TAG, digest)

        results = check_metric_gates(dict(run.data.metrics) if run else {}, gate_exprs)
        report = None
        if holdout is not None and target is not None:
            champion = _champion(dst_ws, name, stage_to if stage_to != "None" else "Production")
            res, report = holdout_gate(
                (src_ws, src.pinned_uri),
                (dst_ws, f"models:/{name}/{champion}") if champion else None,
                holdout,
                target,
                metric=metric,
                min_delta=min_delta,
            )
            results.append(res)
        if smoker is not None:
            if all(r.passed for r in results):
                started = time.perf_counter()
                results.append(smoker.run(model_dir))
                logger.info("smoke test took %.1fs", time.perf_counter() - started)
            else:
                results.append(smoker.skipped("skipped: an earlier gate failed"))
        result = PromotionResult(
            name=name,
            source=source_info,
            target_workspace=dst_ws.name,
            version=str(existing.version) if existing is not None else None,
            run_id=str(existing.run_id) if existing is not None else None,
            digest=digest,
            created=existing is None,
            stage=None if stage_to == "None" else stage_to,
            gates=results,
            holdout=report,
            dry_run=dry_run,
        )
        holders = _holders(dst_ws, name, stage_to)
        result.plan = _plan(result, existing, holders)
        if not result.passed:
            failed = [g.gate for g in results if g.passed is False]
            if not dry_run:
                _record_gates(src_ws, name, src_version, dst_ws, results, passed=False)
            exc = GateFailedError(
                f"Promotion of {name} v{src_version} from '{src_ws.name}' to '{dst_ws.name}' "
                f"refused: gate(s) failed: {', '.join(failed)}; target left untouched",
                [g.to_dict() for g in results],
            )
            exc.result = result  # type: ignore[attr-defined]
            raise exc
        if dry_run:
            return result
        _record_gates(src_ws, name, src_version, dst_ws, results, passed=True)
        promotion_id = new_promotion_id()
        model_existed = _model_exists(dst_ws, name)  # before a remote lease may create it
        with model_lock(dst_ws, name, purpose=f"promote {promotion_id}", create=True):
            # A promotion killed earlier is finished or undone before this one starts.
            for outcome in repair_unlocked(dst_ws, name, stray_runs=False):
                result.repaired.append(outcome.to_dict())
            # Checked again under the lock: another promotion of the same content may have
            # registered it while this one ran its gates.
            if not force:
                existing = find_version_by_tag(dst_ws, name, DIGEST_TAG, digest)
                result.version = str(existing.version) if existing is not None else None
                result.run_id = str(existing.run_id) if existing is not None else None
                result.created = existing is None
            return _write(
                src_ws,
                dst_ws,
                src,
                run,
                result,
                existing,
                model_dir,
                run_artifacts,
                promotion_id=promotion_id,
                model_existed=model_existed,
                progress=progress,
                before_register=before_register,
                before_stage=before_stage,
            )


def _write(
    src_ws: Workspace,
    dst_ws: Workspace,
    src: Any,
    run: Any,
    result: PromotionResult,
    existing: Any,
    model_dir: Path,
    run_artifacts: dict[str, Path],
    *,
    promotion_id: str,
    model_existed: bool,
    progress: Progress | None,
    before_register: Callable[[str], None] | None,
    before_stage: Callable[[str], None] | None,
) -> PromotionResult:
    """The write phase, under the target model's lock, journalled step by step."""
    name = result.name
    stage_to = result.stage or "None"
    if not model_existed:
        _create_model(dst_ws, name)  # it holds the journal (a remote lease may have made it)
    holders = _holders(dst_ws, name, stage_to)
    journal = Journal.start(
        dst_ws,
        name,
        promotion_id,
        source={
            "workspace": src_ws.name,
            "name": name,
            "version": str(src.version),
            "digest": result.digest,
        },
        stage=stage_to,
        before={
            "holders": holders,
            "model_existed": model_existed,
            "reused_version": None if existing is None else str(existing.version),
            "reused_prev_stage": None
            if existing is None
            else canonical_stage(existing.current_stage or "None"),
        },
        planned=list(STEPS),
    )
    now = utcnow()
    lineage = {
        SOURCE_WORKSPACE_TAG: src_ws.name,
        SOURCE_TRACKING_URI_TAG: src_ws.tracking_uri,
        SOURCE_REGISTRY_URI_TAG: src_ws.registry_uri,
        SOURCE_MODEL_TAG: name,
        SOURCE_VERSION_TAG: str(src.version),
        SOURCE_RUN_TAG: str(src.run_id or ""),
        PROMOTED_AT_TAG: now,
        PROMOTED_BY_TAG: current_user(),
        PROMOTION_ID_TAG: promotion_id,
    }

    def registering(run_id: str) -> None:
        # Not marked in the journal (a round trip): a repair finds the run by its
        # promotion id tag.
        fault_point("after_run")
        if before_register is not None:
            before_register(run_id)

    try:
        fault_point("after_journal")
        if existing is None:
            params, metrics, tags = run_data(src_ws, run)
            reg = log_and_register(
                dst_ws,
                model_dir,
                name,
                experiment=f"promoted/{name}",
                run_name=f"{name}-v{src.version}-from-{src_ws.name}",
                params=params,
                metrics=metrics,
                run_tags={**tags, **lineage},
                version_tags={
                    **user_version_tags(src.model_version),
                    **lineage,
                    # The same bytes (digest-checked): the source's consent carries over.
                    **{
                        k: v
                        for k, v in (getattr(src.model_version, "tags", None) or {}).items()
                        if k == PICKLE_CONSENT_TAG
                    },
                },
                description=getattr(src.model_version, "description", None) or None,
                force=True,
                extra_artifacts={k: str(v) for k, v in run_artifacts.items()},
                before_register=registering,
                progress=upload_progress(progress),
            )
            result.version, result.run_id = reg.version, reg.run_id
            fault_point("after_register")  # registered, not verified: a repair undoes it
            verify_copy(dst_ws, name, reg.version, model_dir)
        assert result.version is not None
        journal.mark("register", "verify", version=result.version, created=existing is None)
        fault_point("after_verify")
        if before_stage is not None:
            before_stage(result.version)
        from_stage = (
            "None" if existing is None else canonical_stage(existing.current_stage or "None")
        )
        if stage_to != "None":
            moved = move_stage(dst_ws, name, result.version, stage_to, alias=None, archive=True)
            result.archived = moved["archived"]
            from_stage = moved["from_stage"]
        fault_point("after_stage")  # not marked: a repair checks the holders itself
        record_event(
            dst_ws,
            name,
            "promote",
            version=result.version,
            details={
                "promotion_id": promotion_id,
                "from_workspace": src_ws.name,
                "from_version": str(src.version),
                "from_stage": from_stage,
                "to_stage": stage_to,
                "created": result.created,
                "digest": result.digest,
                "archived": result.archived,
                "gates": [g.to_dict() for g in result.gates],
            },
        )
        fault_point("after_audit")
    except BaseException as exc:
        outcome = undo(journal)
        raise _failure(name, src, dst_ws, exc, outcome) from exc
    journal.close()
    logger.info(
        "promoted %s v%s (%s) -> %s v%s %s",
        name,
        src.version,
        src_ws.name,
        dst_ws.name,
        result.version,
        stage_to,
    )
    return result


def _failure(
    name: str, src: Any, dst_ws: Workspace, exc: BaseException, outcome: RepairOutcome
) -> BaseException:
    """The one-line error of a failed or interrupted promotion, honest about its undo."""
    if isinstance(exc, KeyboardInterrupt):
        verb, cause = "was interrupted", str(exc) or "SIGINT"
    elif isinstance(exc, LifecycleError):
        verb, cause = "failed", str(exc).splitlines()[0]
    else:
        verb, cause = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
    head = f"Promotion of {name} v{src.version} into '{dst_ws.name}'"
    if outcome.clean:
        message = f"{head} {verb} and was rolled back: {cause}" + (
            f" ({'; '.join(outcome.notes)})" if outcome.notes else ""
        )
    else:
        message = (
            f"{head} {verb}: {cause}; the rollback left behind: "
            f"{'; '.join(outcome.left_behind)}; run: {repair_command(dst_ws, name)}"
        )
    error = PromotionError(message)
    if isinstance(exc, KeyboardInterrupt):
        error.exit_code = getattr(exc, "exit_code", 130)
    error.undo = outcome.to_dict()  # type: ignore[attr-defined]
    return error


def _same_workspace(a: Workspace, b: Workspace) -> bool:
    return a.tracking_uri.rstrip("/") == b.tracking_uri.rstrip("/") and a.registry_uri.rstrip(
        "/"
    ) == b.registry_uri.rstrip("/")


def _create_model(ws: Workspace, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        ws.client().create_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise


def _model_exists(ws: Workspace, name: str) -> bool:
    from lifecycle.base.refs import get_registered_model

    try:
        get_registered_model(ws, name)
        return True
    except ModelNotFoundError:
        return False


def _get_run(client: Any, run_id: str | None) -> Any:
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except Exception as exc:  # a version may point at a run that was deleted or lives elsewhere
        logger.warning("source run %s not readable (%s); copying the model only", run_id, exc)
        return None


def _champion(ws: Workspace, name: str, stage: str) -> str | None:
    try:
        holders = versions_in_stage(ws, name, stage)
    except ModelNotFoundError:
        return None
    return holders[0] if holders else None


def _holders(ws: Workspace, name: str, stage: str) -> list[str]:
    if stage == "None":
        return []
    try:
        return versions_in_stage(ws, name, stage)
    except ModelNotFoundError:
        return []


def _plan(result: PromotionResult, existing: Any, holders: list[str]) -> list[str]:
    ws = result.target_workspace
    if existing is not None:
        steps = [f"reuse {result.name} version {existing.version} in '{ws}' (same content digest)"]
    else:
        steps = [
            f"create a run in experiment 'promoted/{result.name}' of '{ws}' with the source "
            "run's params, metric history, tags and artifacts",
            f"register a new version of {result.name} in '{ws}' from that run's artifacts",
        ]
    if result.stage:
        others = [v for v in holders if v != (str(existing.version) if existing else None)]
        steps.append(
            f"move it to {result.stage}"
            + (f" and archive version(s) {', '.join(others)}" if others else "")
        )
    return steps


def _record_gates(
    src_ws: Workspace,
    name: str,
    version: str,
    dst_ws: Workspace,
    results: list[GateResult],
    *,
    passed: bool,
) -> None:
    # Gate outcomes live with the candidate (the source); a refused promotion must leave the
    # target untouched. The source may be read-only for us: then the result is only logged.
    try:
        record_event(
            src_ws,
            name,
            "gate",
            version=version,
            details={
                "to_workspace": dst_ws.name,
                "passed": passed,
                "gates": [g.to_dict() for g in results],
            },
        )
    except Exception as exc:
        logger.warning("could not record gate results in '%s': %s", src_ws.name, exc)


__all__ = ["PromotionResult", "promote"]
