"""The lean scoring path for skops scikit-learn models with an all-numeric signature.

Owns :class:`LeanPredictor`: the estimator loaded without MLflow (:mod:`lifecycle.base.lean`) in a
background thread while the first CSV blocks are parsed, predicting on a NumPy matrix built
straight from the Arrow columns (:func:`batch.schema.coerce_matrix`, no pandas frame), and
the check that this path answers exactly like the model's ``pyfunc.predict``.

The check is not assumed: unless a verdict for the same model digest and package versions
is cached (:func:`lifecycle.base.lean.fastpath_verdict`), :meth:`LeanPredictor.confirm` imports
MLflow, loads the model with ``mlflow.pyfunc.load_model`` and compares both paths on the
model's input example plus a sample of the real rows of every chunk (the same rows through
:func:`batch.schema.coerce` + ``pyfunc.predict`` and through the matrix + estimator, rejects
included). That happens after the last chunk, so MLflow's modules never sit in memory beside
the chunks in flight. The engine renames an output into place only after
:meth:`LeanPredictor.confirm`; when the paths disagree it rescores the output through pyfunc.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from batch.predict import predict_isolating_errors
from batch.schema import InputSchema, coerce, coerce_matrix
from lifecycle.base.loader import load_pyfunc

logger = logging.getLogger(__name__)

#: The verdict-cache kind of this path (:func:`lifecycle.base.lean.fastpath_verdict`).
VERDICT_KIND = "batch-sklearn-matrix"
#: Rows of the first chunk of each input checked against pyfunc, and rows of every later one.
FIRST_SAMPLE_ROWS = 256
SAMPLE_ROWS = 16

Predict = Any  # a callable (rows) -> predictions, as predict_isolating_errors takes


class LeanDisagreement(Exception):
    """The lean path did not answer like ``pyfunc.predict`` (internal: triggers a rescore)."""


@dataclass
class LeanPlan:
    """Whether and how a model can be scored on the lean path (see :func:`plan_lean`)."""

    eligible: bool
    reason: str
    digest: str | None = None
    verified_by_cache: bool = False


def plan_lean(model_dir: str, schema: InputSchema) -> LeanPlan:
    """Decide from the model's files (no MLflow, no model load) whether the lean path applies."""
    from lifecycle.base.digest import model_digest
    from lifecycle.base.lean import fastpath_verdict, lean_eligible, matrix_columns, read_mlmodel

    try:
        mlmodel = read_mlmodel(model_dir)
    except (OSError, ValueError) as exc:
        return LeanPlan(False, f"cannot read MLmodel: {exc}")
    why = lean_eligible(mlmodel)
    if why is not None:
        return LeanPlan(False, why)
    if matrix_columns(mlmodel) != tuple(schema.names):
        return LeanPlan(False, "the signature is not all required numeric columns")
    digest = model_digest(model_dir)
    verdict = fastpath_verdict(digest, VERDICT_KIND)
    if verdict is not None and not verdict.get("agreed"):
        return LeanPlan(False, f"recorded disagreement with pyfunc: {verdict.get('reason')}")
    return LeanPlan(True, "eligible", digest, verified_by_cache=verdict is not None)


class LeanPredictor:
    """The estimator on the lean path, loaded in the background, checked against pyfunc.

    ``predict`` blocks until the estimator is loaded (parsing does not wait for it).
    """

    def __init__(self, model_dir: str, schema: InputSchema, plan: LeanPlan) -> None:
        self.model_dir = model_dir
        self.schema = schema
        self.plan = plan
        self.verify = not plan.verified_by_cache
        self._loader = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lean-load")
        self._model: cf.Future[Any] = self._loader.submit(self._load)
        self._checker = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lean-verify")
        self._lock = threading.Lock()
        self._pending: list[pa.Table] = []
        self._checks: list[cf.Future[None]] = []
        self._pyfunc: Any = None
        self.rows_checked = 0
        self.disagreement: str | None = None
        self._first_seen: set[int] = set()
        self._example_checked = False

    # ------------------------------------------------------------------ loading, predicting

    def _load(self) -> Any:
        from lifecycle.base.lean import load_lean_sklearn

        # The matrix has no column names: the estimator's own names were checked below.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        lean = load_lean_sklearn(self.model_dir)
        if lean is None:
            raise LeanDisagreement("the model is not loadable without MLflow")
        names = getattr(lean.estimator, "feature_names_in_", None)
        if names is not None and [str(n) for n in names] != self.schema.names:
            raise LeanDisagreement(
                f"the estimator's feature names {list(names)} are not the signature's "
                f"{self.schema.names} in order"
            )
        return lean

    def wait_loaded(self) -> None:
        """Block until the estimator is loaded (or failed to load; never raises).

        Work that imports MLflow waits for this first: skops' trusted-type scan walks every
        loaded module, so it is slower once MLflow is imported.
        """
        cf.wait([self._model])

    def predict(self, matrix: np.ndarray) -> Any:
        """The estimator's pyfunc predict function on ``matrix`` (waits for the load).

        Raises:
            LeanDisagreement: the estimator could not be loaded without MLflow (the engine
                then scores through pyfunc at once).
        """
        try:
            lean = self._model.result()
        except LeanDisagreement:
            raise
        except Exception as exc:
            raise LeanDisagreement(f"lean load failed: {exc}") from exc
        return lean.predict(matrix)

    # ------------------------------------------------------------------ checking

    def sample(self, table: pa.Table, ok: np.ndarray, file_index: int, seq: int) -> None:
        """Queue accepted rows of a chunk for the check against pyfunc (a no-op when trusted)."""
        if not self.verify or table.num_rows == 0:
            return
        rows = np.flatnonzero(ok)
        with self._lock:
            first = file_index not in self._first_seen
            self._first_seen.add(file_index)
        if first:
            picked = rows[:FIRST_SAMPLE_ROWS]
        else:
            rng = np.random.default_rng(seq)
            picked = np.sort(rng.choice(rows, size=min(SAMPLE_ROWS, len(rows)), replace=False))
        if len(picked) == 0:
            return
        sample = table.select(self.schema.names).take(pa.array(picked, pa.int64()))
        with self._lock:  # checked in confirm(): no Python-bound work while scoring
            self._pending.append(sample)

    def confirm(self) -> None:
        """Wait for every queued check.

        Raises:
            LeanDisagreement: the lean path answered differently from ``pyfunc.predict`` (or
                either could not be run), with the reason.
        """
        try:
            self._model.result()
        except LeanDisagreement as exc:
            self.disagreement = self.disagreement or str(exc)
        except Exception as exc:
            self.disagreement = self.disagreement or f"lean load failed: {exc}"
        if self.verify:
            with self._lock:
                checks = list(self._checks)
                if not self._example_checked:
                    self._example_checked = True
                    checks.append(self._checker.submit(self._check_input_example))
                checks.append(self._checker.submit(self._check_pending))
            for fut in checks:
                try:
                    fut.result()
                except Exception as exc:
                    self.disagreement = self.disagreement or f"check failed: {exc}"
        if self.disagreement:
            raise LeanDisagreement(self.disagreement)

    def record_verdict(self) -> None:
        """Cache the outcome of this run's checks under the model digest (when checked)."""
        from lifecycle.base.lean import save_fastpath_verdict

        if self.plan.digest is None or (not self.verify and self.disagreement is None):
            return
        if self.disagreement is None and self.rows_checked == 0:
            return
        verdict: dict[str, Any] = {"agreed": self.disagreement is None}
        verdict["rows_checked"] = self.rows_checked
        if self.disagreement is not None:
            verdict["reason"] = self.disagreement
        save_fastpath_verdict(self.plan.digest, VERDICT_KIND, verdict)

    def close(self) -> None:
        """Stop the background threads (queued checks are dropped)."""
        self._checker.shutdown(wait=True, cancel_futures=True)
        self._loader.shutdown(wait=True, cancel_futures=True)

    def _pyfunc_model(self) -> Any:
        if self._pyfunc is None:
            self.wait_loaded()

            logging.getLogger("mlflow").setLevel(logging.ERROR)
            self._pyfunc = load_pyfunc(self.model_dir)
        return self._pyfunc

    def _check_input_example(self) -> None:
        """Compare both paths on the model's saved input example, when it has one."""
        from lifecycle.base.lean import read_mlmodel

        self.wait_loaded()
        if not read_mlmodel(self.model_dir).get("saved_input_example_info"):
            return
        from mlflow.models import Model

        try:
            example = Model.load(self.model_dir).load_input_example(self.model_dir)
            table = pa.Table.from_pandas(example, preserve_index=False)
        except Exception as exc:  # an unusable example is skipped, the real rows still count
            logger.info("input example of %s not used for the check: %s", self.model_dir, exc)
            return
        if all(n in table.column_names for n in self.schema.names):
            self._compare(table.select(self.schema.names))

    def _check_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        groups: dict[pa.Schema, list[pa.Table]] = {}
        for table in pending:  # typed and text-parsed chunks have different schemas
            groups.setdefault(table.schema, []).append(table)
        for tables in groups.values():
            if self.disagreement is None:
                self._compare(pa.concat_tables(tables))

    def _compare(self, table: pa.Table) -> None:
        """Both paths on the same rows: predictions, rejects and their reasons must match."""
        from lifecycle.base.lean import same_predictions

        generic = coerce(table, self.schema)
        lean = coerce_matrix(table, self.schema)
        if not np.array_equal(generic.ok, lean.ok) or generic.reasons != lean.reasons:
            self.disagreement = "the matrix coercion rejects other rows than the frame's"
            return
        want, want_err = predict_isolating_errors(self._pyfunc_model(), generic.frame)
        got, got_err = predict_isolating_errors(self._model.result(), lean.matrix)
        if got_err != want_err:
            self.disagreement = f"model errors differ: lean {got_err}, pyfunc {want_err}"
        elif list(got) != list(want) or not all(
            same_predictions(np.asarray(got[k]), np.asarray(want[k])) for k in want
        ):
            self.disagreement = f"predictions differ from pyfunc.predict on {len(table)} rows"
        else:
            self.rows_checked += table.num_rows
