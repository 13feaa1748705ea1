"""The demo: six ways a model reaches production, on the embedded default workspaces.

{Designer, Notebook, AutoML} x {real-time, batch}. For each origin: make the origin
artifact, import it into ``dev``, promote it into ``prod`` behind gates, then serve prod's
Production version over HTTP (queried with MLflow's and Azure ML's payloads) and score a
folder of CSVs with it in batch, and write the Azure ML specs for both targets.

The Designer and AutoML artifacts are made by the origin builders in the repository's
``tests/origins.py`` (Designer's and AutoML's own packages cannot be installed); when the
toolkit runs outside a checkout those four scenarios are reported as not run, never faked.
This module sits at the top of the stack, beside the CLI: it is the one place that drives
``models``, ``lifecycle``, ``batch`` and ``serving`` together.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.errors import LifecycleError
from lifecycle.base.workspaces import Workspace, load_config

logger = logging.getLogger(__name__)

ORIGINS = ("notebook", "designer", "automl")
MODES = ("real-time", "batch")


@dataclass
class ScenarioResult:
    """One row of the demo's table."""

    origin: str
    mode: str
    model: str = ""
    dev_version: str = ""
    prod_version: str = ""
    stage: str = ""
    where: str = ""
    rows_scored: int = 0
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""

    @property
    def scenario(self) -> str:
        """``origin x mode``."""
        return f"{self.origin} x {self.mode}"


@dataclass
class DemoReport:
    """Everything the demo did, and where."""

    work_dir: str
    config_path: str
    results: list[ScenarioResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every scenario that ran succeeded."""
        return bool(self.results) and all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            "work_dir": self.work_dir,
            "config": self.config_path,
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            "scenarios": [{"scenario": r.scenario, **asdict(r)} for r in self.results],
            "notes": self.notes,
        }


def run_demo(
    work_dir: str | Path | None = None,
    *,
    origins: tuple[str, ...] = ORIGINS,
    rows_per_file: int = 2000,
    files: int = 3,
) -> DemoReport:
    """Run the scenarios in ``work_dir`` (a fresh temporary folder when None).

    Args:
        work_dir: where the workspaces, artifacts and outputs go (kept afterwards).
        origins: which origins to run (notebook, designer, automl).
        rows_per_file: rows of each batch input CSV.
        files: how many CSVs the batch scenarios score.

    Returns:
        The :class:`DemoReport`; a failed scenario is reported in it, not raised.
    """
    started = time.monotonic()
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="lifecycle-demo-"))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "lifecycle.yaml"
    config_path.write_text(
        yaml.safe_dump({"default": "dev", "home": str(root / ".lifecycle")}), encoding="utf-8"
    )
    config = load_config(config_path)
    dev, prod = config.get("dev"), config.get("prod")
    report = DemoReport(work_dir=str(root), config_path=str(config_path))
    logger.info("demo folder: %s (workspaces dev and prod in %s)", root, root / ".lifecycle")
    # The demo's servers keep their warm-start cache in the demo folder, not the user's.
    cache_var = "LIFECYCLE_CACHE_DIR"
    previous = os.environ.get(cache_var)
    os.environ[cache_var] = str(root / "cache")
    try:
        for origin in origins:
            builder = _BUILDERS[origin]
            try:
                _run_origin(
                    origin, builder, root, dev, prod, config_path, report, rows_per_file, files
                )
            except _NotAvailable as exc:
                report.notes.append(f"{origin}: not run: {exc}")
                logger.warning("%s scenarios not run: %s", origin, exc)
    finally:
        if previous is None:
            os.environ.pop(cache_var, None)
        else:
            os.environ[cache_var] = previous
    report.seconds = time.monotonic() - started
    return report


class _NotAvailable(Exception):
    """An origin's sample artifact cannot be made here (outside a checkout)."""


@dataclass
class _Origin:
    path: Path
    kind: str
    holdout: Any  # features DataFrame
    labels: Any | None
    target: str | None
    sample_csv: Path | None
    gates: tuple[str, ...] = ()


def _origins_module() -> Any:
    repo = Path(__file__).resolve().parent.parent
    if not (repo / "tests" / "origins.py").is_file():
        raise _NotAvailable(
            "the Designer/AutoML sample builders (tests/origins.py) are only in a checkout "
            "of the repository; run the demo from one (make demo)"
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return importlib.import_module("tests.origins")


def _build_notebook(root: Path) -> _Origin:
    from lifecycle.cli.train import train

    trained = train(root / "notebook")
    import pandas as pd

    holdout = pd.read_csv(trained.holdout_csv)
    return _Origin(
        path=Path(trained.joblib_path),
        kind="notebook",
        holdout=holdout.drop(columns=[trained.target]),
        labels=holdout[trained.target],
        target=trained.target,
        sample_csv=Path(trained.sample_csv),
        gates=(),
    )


def _build_designer(root: Path) -> _Origin:
    origins = _origins_module()
    built = origins.build_designer(root / "designer", "binary")
    return _Origin(
        path=built.path,
        kind="designer",
        holdout=built.holdout,
        labels=None,
        target=None,
        sample_csv=None,
    )


def _build_automl(root: Path) -> _Origin:
    origins = _origins_module()
    built = origins.build_automl_outputs(root / "automl")
    return _Origin(
        path=built.path,
        kind="automl",
        holdout=built.holdout,
        labels=None,
        target=None,
        sample_csv=None,
    )


_BUILDERS: dict[str, Callable[[Path], _Origin]] = {
    "notebook": _build_notebook,
    "designer": _build_designer,
    "automl": _build_automl,
}


def _run_origin(
    origin: str,
    builder: Callable[[Path], _Origin],
    root: Path,
    dev: Workspace,
    prod: Workspace,
    config_path: Path,
    report: DemoReport,
    rows_per_file: int,
    files: int,
) -> None:
    from lifecycle.registry.imports import import_model
    from lifecycle.registry.promote import promote
    from lifecycle.registry.stages import transition

    name = f"{origin}-demo"
    t0 = time.monotonic()
    rt = ScenarioResult(origin=origin, mode="real-time", model=name)
    bt = ScenarioResult(origin=origin, mode="batch", model=name)
    report.results += [rt, bt]
    try:
        made = builder(root)
        logger.info("[%s] origin artifact: %s", origin, made.path)
        # The demo made this file itself, so it consents to unpickling it.
        imported = import_model(
            dev,
            made.path,
            name,
            kind=made.kind,
            sample=made.sample_csv,
            target=made.target,
            trust_pickle=True,
        )
        logger.info("[%s] imported into dev: %s version %s", origin, name, imported.version)
        transition(dev, name, imported.version, "Staging")
        holdout_csv = None
        if made.labels is not None and made.target:
            holdout_csv = root / origin / "holdout_labelled.csv"
            made.holdout.assign(**{made.target: made.labels.values}).to_csv(
                holdout_csv, index=False
            )
        promoted = promote(
            dev,
            prod,
            name,
            version=imported.version,
            target_stage="Production",
            gates=made.gates,
            holdout=holdout_csv,
            target=made.target if holdout_csv else None,
        )
        gates = ", ".join(f"{g.gate}: {_verdict(g.passed)}" for g in promoted.gates)
        logger.info(
            "[%s] promoted to prod: version %s in %s (%s)",
            origin,
            promoted.version,
            promoted.stage,
            gates,
        )
        for r in (rt, bt):
            r.dev_version, r.prod_version, r.stage = (
                imported.version,
                str(promoted.version),
                str(promoted.stage),
            )
        setup_s = time.monotonic() - t0
    except Exception as exc:
        _fail_both(rt, bt, exc, t0)
        return
    uri = f"models:/{name}/Production"
    _real_time(origin, uri, made, config_path, root, rt, setup_s)
    _batch(origin, uri, made, prod, root, bt, setup_s, rows_per_file, files)
    _azure_specs(origin, name, str(promoted.version), prod, root, report)


def _fail_both(rt: ScenarioResult, bt: ScenarioResult, exc: BaseException, t0: float) -> None:
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    logger.error("%s failed: %s", rt.origin, detail)
    for r in (rt, bt):
        r.ok, r.detail, r.seconds = False, detail, time.monotonic() - t0


def _real_time(
    origin: str,
    uri: str,
    made: _Origin,
    config_path: Path,
    root: Path,
    rt: ScenarioResult,
    setup_s: float,
) -> None:
    import requests

    from lifecycle.cli.background import start_background

    t0 = time.monotonic()
    try:
        rows = made.holdout.head(5)
        split = json.loads(rows.to_json(orient="split", index=False))
        with start_background(
            uri, config_path=config_path, workspace="prod", log_path=root / f"{origin}-serve.log"
        ) as server:
            mlflow_answer = requests.post(
                server.url + "/invocations", json={"dataframe_split": split}, timeout=30
            )
            azure_answer = requests.post(
                server.url + "/invocations",
                json={"input_data": {**split, "index": list(range(len(rows)))}},
                timeout=30,
            )
            version = requests.get(server.url + "/version", timeout=10).json()
            for answer in (mlflow_answer, azure_answer):
                if answer.status_code != 200:
                    raise LifecycleError(
                        f"server answered {answer.status_code}: {answer.text[:200]}"
                    )
            preds = mlflow_answer.json()["predictions"]
            azure_preds = azure_answer.json()
            if len(preds) != len(rows) or len(azure_preds) != len(rows):
                raise LifecycleError(
                    f"expected {len(rows)} predictions, got {len(preds)} (MLflow payload) and "
                    f"{len(azure_preds)} (Azure payload)"
                )
            rt.where = f"{server.url} (prod v{version.get('version', '?')})"
            rt.rows_scored = len(preds) + len(azure_preds)
            rt.ok = True
            rt.detail = f"first prediction: {json.dumps(preds[0], default=str)[:60]}"
            logger.info(
                "[%s] served %s at %s: MLflow and Azure payloads answered", origin, uri, server.url
            )
    except Exception as exc:
        rt.ok, rt.detail = False, f"{type(exc).__name__}: {exc}".splitlines()[0]
        logger.error("[%s] real-time failed: %s", origin, rt.detail)
    rt.seconds = setup_s + time.monotonic() - t0


def _batch(
    origin: str,
    uri: str,
    made: _Origin,
    prod: Workspace,
    root: Path,
    bt: ScenarioResult,
    setup_s: float,
    rows_per_file: int,
    files: int,
) -> None:
    from batch.engine import score

    t0 = time.monotonic()
    try:
        in_dir = root / origin / "batch-in"
        if in_dir.exists():
            shutil.rmtree(in_dir)
        in_dir.mkdir(parents=True)
        base = made.holdout.reset_index(drop=True)
        expected_rows = 0
        for i in range(files):
            reps = -(-rows_per_file // len(base))
            part = base.sample(n=rows_per_file, replace=reps > 1, random_state=i).reset_index(
                drop=True
            )
            part.insert(0, "row_id", range(i * rows_per_file, (i + 1) * rows_per_file))
            part.to_csv(in_dir / f"part-{i:02d}.csv", index=False)
            expected_rows += len(part)
        out = root / origin / "batch-out" / "scored.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        manifest = score(prod, uri, in_dir, out, keep_columns=["row_id"], workers=1)
        if manifest.rows_read != expected_rows or manifest.rows_scored != expected_rows:
            raise LifecycleError(
                f"expected {expected_rows} rows scored, read {manifest.rows_read}, scored "
                f"{manifest.rows_scored}, rejected {manifest.rows_rejected}"
            )
        bt.where = str(out.relative_to(root))
        bt.rows_scored = manifest.rows_scored
        bt.ok = True
        bt.detail = (
            f"{manifest.rows_per_s:,.0f} rows/s; manifest {Path(str(manifest.manifest_path)).name}"
        )
        logger.info(
            "[%s] scored %d rows from %d files into %s", origin, manifest.rows_scored, files, out
        )
    except Exception as exc:
        bt.ok, bt.detail = False, f"{type(exc).__name__}: {exc}".splitlines()[0]
        logger.error("[%s] batch failed: %s", origin, bt.detail)
    bt.seconds = setup_s + time.monotonic() - t0


def _azure_specs(
    origin: str, name: str, version: str, prod: Workspace, root: Path, report: DemoReport
) -> None:
    """Write the Azure ML online and batch specs (checked by azure-ai-ml's own loaders)."""
    try:
        from batch.azure import deploy_azure_batch
        from serving.azure import deploy_azure_online
    except ImportError as exc:  # the azure extra is optional
        report.notes.append(f"{origin}: Azure specs not written ({exc})")
        return
    out = root / origin / "azure"
    try:
        online = deploy_azure_online(
            prod, name, version, endpoint=f"{origin}-rt", out_dir=out / "online"
        )
        batch = deploy_azure_batch(
            prod,
            name,
            version,
            endpoint=f"{origin}-batch",
            compute="cpu-cluster",
            out_dir=out / "batch",
        )
        files = len(online.get("files", {})) + len(batch.get("files", {}))
        report.notes.append(
            f"{origin}: {files} Azure ML spec files in {out.relative_to(root)} "
            "(online + batch, accepted by azure-ai-ml's loaders)"
        )
    except Exception as exc:
        report.notes.append(
            f"{origin}: Azure specs failed: {type(exc).__name__}: {exc}".splitlines()[0]
        )


def _verdict(passed: bool | None) -> str:
    return "skipped" if passed is None else ("pass" if passed else "FAIL")
