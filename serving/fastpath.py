"""A loaded model ready to answer requests: the fast path and the general path.

At load time the model's signature is compiled once into a :class:`FastPredictor` when the
model allows it: a scikit-learn flavor whose input signature is named ``double`` columns,
no step that selects columns by name, and whose raw estimator on a NumPy array in
signature order returns exactly what ``pyfunc.predict`` returns on the equivalent
DataFrame (checked on the input example and random probes before it is trusted).
Everything else, and every request the fast path does not recognise, goes through
MLflow's own scoring function (:meth:`Scorer.general`), so answers and error codes stay
MLflow's.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lifecycle.base.errors import ModelEnvError
from lifecycle.base.lean import (
    agrees_with_pyfunc,
    matrix_columns,
    sklearn_pyfunc_problem,
)
from lifecycle.base.loader import load_pyfunc
from serving.protocol import (
    Reply,
    azure_input,
    error_reply,
    render_predictions,
)

logger = logging.getLogger(__name__)

#: A callback that receives (model input, predictions) of each answered request.
InputSink = Callable[[Any, Any, "ModelInfo"], None]

# Fitted with feature names, called with a NumPy array in the same order: expected here.
warnings.filterwarnings("ignore", message="X does not have valid feature names")

#: The signature column types the fast path takes (JSON numbers parsed as float64).
DOUBLE_ONLY = frozenset({"double"})
_NAME_DEPENDENT = ("ColumnTransformer", "FunctionTransformer", "make_column_selector")


@dataclass(frozen=True)
class ModelInfo:
    """What ``/version`` says about the model that answers."""

    name: str | None
    version: str | None
    uri: str
    stage: str | None = None
    alias: str | None = None
    digest: str | None = None
    workspace: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return dict(self.__dict__)


@dataclass
class FastPredictor:
    """The raw estimator's prediction method and the signature order it expects."""

    columns: tuple[str, ...]
    predict: Callable[[np.ndarray], Any]
    method: str
    #: True when predicting a stacked batch and splitting it gives each request's answer.
    batchable: bool = True

    def __call__(self, matrix: np.ndarray) -> Any:
        return self.predict(matrix)


def compile_fast_path(pyfunc_model: Any, probes: int = 32) -> FastPredictor | None:
    """A :class:`FastPredictor` for ``pyfunc_model``, or None when it must use pyfunc.

    The candidate is trusted only after it matched ``pyfunc.predict`` exactly (values and
    dtype) on the input example, when there is one, and on ``probes`` random rows.
    """
    meta = pyfunc_model.metadata
    conf = meta.flavors.get("python_function", {})
    mlmodel = meta.to_dict()
    if sklearn_pyfunc_problem(mlmodel) is not None:
        return None
    # JSON numbers become one float64 matrix: every input must be a required double.
    columns = matrix_columns(mlmodel, types=DOUBLE_ONLY)
    if columns is None:
        return None
    try:
        raw = pyfunc_model.get_raw_model()
    except Exception:  # a wrapper without get_raw_model: no fast path
        return None
    if any(tag in repr(type(s)) for s in _steps(raw) for tag in _NAME_DEPENDENT):
        return None
    names_in = getattr(raw, "feature_names_in_", None)
    if names_in is not None and tuple(str(n) for n in names_in) != columns:
        return None
    method = str(conf.get("predict_fn", "predict"))
    fn = getattr(raw, method, None)
    if fn is None:
        return None
    program = numpy_program(raw, method, len(columns))
    if program is not None:
        fast = FastPredictor(columns=columns, predict=program, method=method + " (compiled)")
        verdict = agrees_with_pyfunc(pyfunc_model, fast, fast.columns, probes)
        if verdict is not None:
            fast.batchable = verdict
            return fast
        logger.info("compiled %s disagrees with pyfunc.predict: using the estimator", method)
    fast = FastPredictor(columns=columns, predict=fn, method=method)
    verdict = agrees_with_pyfunc(pyfunc_model, fast, fast.columns, probes)
    if verdict is None:
        logger.info("fast path disabled: raw estimator disagrees with pyfunc.predict")
        return None
    fast.batchable = verdict
    return fast


def numpy_program(est: Any, method: str, width: int) -> Callable[[np.ndarray], Any] | None:
    """The estimator's ``predict`` as plain NumPy, for the linear models it is known for.

    scikit-learn spends ~0.5 ms per call validating input (array-API dispatch, dataframe
    checks) that the fast path has already done. For ``StandardScaler`` steps followed by
    ``LogisticRegression``, ``LinearRegression`` or ``Ridge`` this replays the exact
    arithmetic of their ``transform``/``decision_function``/``predict`` (same operations,
    same order, so the same floats). Callers still verify it against ``pyfunc.predict``.
    Returns None for anything else.
    """
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if method != "predict":
        return None
    if isinstance(est, Pipeline):
        steps = [s for _n, s in est.steps if s is not None and not isinstance(s, str)]
        if not steps:
            return None
        pre, final = steps[:-1], steps[-1]
    else:
        pre, final = [], est
    scalers = []
    for step in pre:
        if type(step) is not StandardScaler:
            return None
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None
        scalers.append((mean, scale))
    coef = getattr(final, "coef_", None)
    if not isinstance(coef, np.ndarray) or coef.shape[-1] != width or coef.dtype != np.float64:
        return None
    intercept = final.intercept_
    coef_t = coef.T if coef.ndim == 2 else coef

    def transform(x: np.ndarray) -> np.ndarray:
        for mean, scale in scalers:
            if mean is not None:
                x = x - mean
            if scale is not None:
                x = x / scale
        return x

    if type(final) is LogisticRegression:
        classes = final.classes_

        def classify(x: np.ndarray) -> Any:
            scores = transform(x) @ coef_t + intercept
            if scores.ndim > 1 and scores.shape[1] == 1:
                scores = scores.reshape(-1)
            indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
            return classes.take(indices, axis=0)

        return classify
    if type(final) in (LinearRegression, Ridge):

        def regress(x: np.ndarray) -> Any:
            return transform(x) @ coef_t + intercept

        return regress
    return None


def _steps(est: Any) -> list[Any]:
    out = [est]
    for attr in ("steps", "transformers", "estimators"):
        for item in getattr(est, attr, None) or []:
            sub = item[1] if isinstance(item, tuple) and len(item) > 1 else item
            out.extend(_steps(sub))
    for attr in ("estimator", "base_estimator", "final_estimator"):
        sub = getattr(est, attr, None)
        if sub is not None and not isinstance(sub, str):
            out.extend(_steps(sub))
    return out


#: How long a request for the general path waits for a warm start to load it.
GENERAL_WAIT_SECONDS = 300.0


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class Scorer:
    """A loaded pyfunc model, its compiled fast path and what ``/version`` reports."""

    info: ModelInfo
    pyfunc_model: Any
    fast: FastPredictor | None
    input_schema: Any = None
    sink: InputSink | None = None
    #: Set once ``pyfunc_model`` is loaded (a warm start loads it after /health is ready).
    general_ready: threading.Event = field(default_factory=_set_event, repr=False)
    #: Why the general path could not be loaded (it then answers 503).
    general_error: str | None = None
    #: The V2 inputs (name, datatype) a warm start's verdict remembered, until the general
    #: path brings the signature itself.
    v2_inputs: list[tuple[str, str]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _general_unavailable(self) -> Reply | None:
        """None once the pyfunc model is there (waiting for it), else a 503 reply."""
        if not self.general_ready.wait(GENERAL_WAIT_SECONDS):
            return error_reply(
                503, "TEMPORARILY_UNAVAILABLE", "The model's general scoring path is still loading"
            )
        if self.pyfunc_model is None:
            return error_reply(
                503,
                "TEMPORARILY_UNAVAILABLE",
                f"The model's general scoring path failed to load: {self.general_error}",
            )
        return None

    def v2_columns(self) -> list[tuple[str, str]]:
        """The signature's columns with their V2 datatypes (:mod:`serving.v2`)."""
        from serving import v2

        if self.input_schema is None and self.v2_inputs is not None:
            return self.v2_inputs
        return v2.signature_columns(self.input_schema)

    @property
    def columns(self) -> tuple[str, ...]:
        """The signature's column order (empty without a fast path)."""
        return self.fast.columns if self.fast else ()

    def general(self, body: bytes, content_type: str | None) -> Reply:
        """Answer through MLflow's own scoring code (any MLflow format, CSV, errors)."""
        if content_type is None:
            return error_reply(
                415,
                "BAD_REQUEST",
                "Missing Content-Type: send application/json or text/csv",
            )
        unavailable = self._general_unavailable()
        if unavailable is not None:
            return unavailable
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        proxy = _RecordingModel(self.pyfunc_model)
        try:
            result = invocations(body, content_type, proxy, self.input_schema)
        except MlflowException as exc:
            if proxy.env_error is not None:  # the model's environment failed, not the input
                return error_reply(503, "TEMPORARILY_UNAVAILABLE", proxy.env_error.message)
            return Reply(exc.get_http_status_code(), exc.serialize_as_json().encode())
        except Exception as exc:  # MLflow's server answers these with a bare 500
            logger.exception("unexpected scoring error")
            return error_reply(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
        if result.status == 200 and self.sink is not None and proxy.seen is not None:
            self.sink(proxy.seen[0], proxy.seen[1], self.info)
        mimetype = result.mimetype
        if mimetype == "application/json":
            mimetype = "application/json"
        return Reply(result.status, result.response.encode(), mimetype)

    def azure(self, payload: Any, params: dict[str, Any] | None) -> Reply:
        """Answer Azure ML's ``input_data`` payload with the bare prediction JSON."""
        unavailable = self._general_unavailable()
        if unavailable is not None:
            return unavailable
        from mlflow.exceptions import MlflowException

        try:
            data = azure_input(payload, self.input_schema)
        except (ValueError, TypeError) as exc:
            return error_reply(400, "BAD_REQUEST", f"Invalid input_data: {exc}")
        try:
            raw = (
                self.pyfunc_model.predict(data, params=params)
                if params
                else self.pyfunc_model.predict(data)
            )
        except MlflowException as exc:
            return Reply(exc.get_http_status_code(), exc.serialize_as_json().encode())
        except ModelEnvError as exc:
            return error_reply(503, "TEMPORARILY_UNAVAILABLE", exc.message)
        except Exception as exc:
            return error_reply(
                400,
                "BAD_REQUEST",
                "Encountered an unexpected error while evaluating the model. Verify that the "
                f"input_data is compatible with the model for inference: {exc}",
            )
        if self.sink is not None:
            self.sink(data, raw, self.info)
        return Reply(200, render_predictions(raw, "azure"))

    def v2_infer(self, name: str, obj: Any) -> Reply:
        """Answer an Open Inference Protocol ``infer`` request (:mod:`serving.v2`): on the
        fast path when the inputs are the signature's numeric columns, else through pyfunc."""
        import pandas as pd

        from serving import v2

        try:
            data = v2.decode_inputs(obj, self.v2_columns())
        except ValueError as exc:
            return v2.error(400, str(exc))
        request_id = obj.get("id")
        if (
            self.fast is not None
            and isinstance(data, pd.DataFrame)
            and tuple(data.columns) == self.fast.columns
        ):
            try:
                matrix = data.to_numpy(dtype=np.float64)
                # Missing or infinite values: pyfunc decides (the estimator may refuse them).
                preds = self.predict_fast(matrix) if np.isfinite(matrix).all() else None
            except (TypeError, ValueError):
                preds = None  # not numeric, or refused: pyfunc gives the exact answer
            if preds is not None:
                if self.sink is not None:
                    self.sink(data, preds, self.info)
                return v2.infer_response(name, self.info.version, request_id, preds)
        unavailable = self._general_unavailable()
        if unavailable is not None:
            return v2.error(503, json.loads(unavailable.body)["message"])
        from mlflow.exceptions import MlflowException

        try:
            preds = self.pyfunc_model.predict(data)
        except MlflowException as exc:
            return v2.error(400, exc.message.splitlines()[0])
        except ModelEnvError as exc:
            return v2.error(503, exc.message)
        except Exception as exc:
            return v2.error(400, f"the model could not score the inputs: {exc}".splitlines()[0])
        if self.sink is not None:
            self.sink(data, preds, self.info)
        return v2.infer_response(name, self.info.version, request_id, preds)

    def predict_fast(self, matrix: np.ndarray) -> Any:
        """The fast path's predictions for a float64 matrix in signature order."""
        assert self.fast is not None
        return self.fast(matrix)


class _RecordingModel:
    """Wraps a pyfunc model for MLflow's ``invocations`` and keeps what it saw."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.metadata = model.metadata
        #: A failure of the model's environment worker (answered 503, not 400).
        self.env_error: ModelEnvError | None = None
        self.seen: tuple[Any, Any] | None = None

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            raw = self._model.predict(data, params=params)
        except ModelEnvError as exc:
            self.env_error = exc
            raise
        self.seen = (data, raw)
        return raw


def load_scorer(model_path: str, info: ModelInfo, sink: InputSink | None = None) -> Scorer:
    """Load the MLflow model at ``model_path`` (a local directory) and compile its fast path.

    Raises:
        ServingError: the model cannot be loaded (the message says why).
    """

    from lifecycle.base.errors import ServingError

    try:
        model = load_pyfunc(model_path, suppress_warnings=True)
    except Exception as exc:
        raise ServingError(
            f"Model {info.uri} failed to load: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    fast = compile_fast_path(model)
    logger.info(
        "loaded %s (version %s); fast path %s",
        info.uri,
        info.version,
        f"on ({fast.method})" if fast else "off",
    )
    return Scorer(
        info=info,
        pyfunc_model=model,
        fast=fast,
        input_schema=model.metadata.get_input_schema(),
        sink=sink,
    )


def describe(scorer: Scorer) -> str:
    """A one-line JSON description of a scorer (for logs)."""
    return json.dumps({**scorer.info.to_dict(), "fast_path": scorer.fast is not None})
