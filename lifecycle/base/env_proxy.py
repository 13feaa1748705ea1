"""A model's pyfunc run in a worker process inside the model's own environment
(:mod:`lifecycle.base.envs`), seen from the toolkit as an ordinary MLflow ``PyFuncModel``:
MLflow's own schema enforcement and params handling run here, the model's code runs there,
and the data crosses as Arrow (:mod:`lifecycle.base.env_worker`).

A worker that dies answers the request in flight with a :class:`ModelEnvError` naming its
exit code and is started again for the next one; nothing waits on a dead process.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import subprocess
import threading
import weakref
from pathlib import Path
from typing import Any

from lifecycle.base import env_worker
from lifecycle.base.envs import EnvSpec, env_python
from lifecycle.base.errors import ModelEnvError, SchemaError

logger = logging.getLogger(__name__)
_LIVE: weakref.WeakSet[EnvWorker] = weakref.WeakSet()


class EnvWorker:
    """One worker process for the MLflow model in ``model_dir``, started now (with
    ``wait=False`` the process is started and :meth:`wait_ready` waits for it to load).

    Raises:
        ModelEnvError: the environment is not prepared, or the model fails to load there.
    """

    def __init__(
        self,
        model_dir: str,
        spec: EnvSpec,
        conf: dict[str, Any],
        *,
        allow_pickle: bool,
        wait: bool = True,
    ) -> None:
        self.model_dir = str(Path(model_dir).resolve())
        self.spec = spec
        self.conf = conf
        self.allow_pickle = allow_pickle
        self.python = env_python(spec)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self.restarts = 0
        self._spawn()
        if wait:
            self.wait_ready()
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        """The worker's process id (None when none runs)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        self._spawn()
        self.wait_ready()

    def _spawn(self) -> None:
        import json

        self._owner = os.getpid()
        cmd = [
            str(self.python),
            "-I",
            str(Path(env_worker.__file__).resolve()),
            self.model_dir,
            json.dumps(self.conf),
        ]
        if self.allow_pickle:
            cmd.append("--allow-pickle")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        logger.debug(
            "model worker pid %d starting in environment '%s'", self._proc.pid, self.spec.name
        )

    def wait_ready(self) -> None:
        """Wait until the worker has loaded the model.

        Raises:
            ModelEnvError: it exited or failed to load the model.
        """
        proc = self._proc
        assert proc is not None
        try:
            header, _ = env_worker.read_frame(proc.stdout)  # type: ignore[arg-type]
        except env_worker.WorkerDied:
            code = proc.wait()
            self._proc = None
            raise ModelEnvError(
                f"the model's environment worker exited with code {code} before loading "
                f"'{self.model_dir}' (its stderr above says why)"
            ) from None
        if not header.get("ok"):
            proc.wait()
            self._proc = None
            raise ModelEnvError(
                f"the model failed to load in its environment '{self.spec.name}': "
                f"{header.get('error')}: {header.get('message')}".splitlines()[0]
            )
        logger.info(
            "model worker pid %s ready in environment '%s' (Python %s)",
            proc.pid,
            self.spec.name,
            header.get("python"),
        )

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """The model's prediction for the DataFrame ``data``, computed in the worker.

        Raises:
            ModelEnvError: the worker died (it is restarted for the next call).
            SchemaError: the model raised on the input (its message is kept).
        """
        import pandas as pd

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        names, payload = env_worker.frame_to_arrow(frame)
        with self._lock:
            if self._owner != os.getpid():
                # A forked process inherits the parent's pipes: it gets a worker of its own.
                self._proc = None
                self._lock = threading.Lock()
                self._start()
            elif self._proc is None or self._proc.poll() is not None:
                self.restarts += 1
                logger.warning("restarting the model worker (restart %d)", self.restarts)
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                env_worker.write_frame(
                    proc.stdin, {"op": "predict", "columns": names, "params": params}, payload
                )
                header, body = env_worker.read_frame(proc.stdout)
            except (env_worker.WorkerDied, BrokenPipeError, OSError):
                code = proc.wait()
                self._proc = None
                raise ModelEnvError(
                    f"the model's environment worker (pid {proc.pid}) died with exit code "
                    f"{code} while predicting; it is restarted for the next request"
                ) from None
        if not header.get("ok"):
            raise SchemaError(
                f"the model raised {header.get('error')}: {header.get('message')}".splitlines()[0]
            )
        return env_worker.decode_result(header, body)

    def close(self, grace: float = 0.2) -> None:
        """Stop the worker (it also stops by itself when this process ends): ask it to
        close, and kill it if it has not exited within ``grace`` seconds. A worker holds
        nothing to save, and tearing down a large runtime (AutoML's: ~2 s of interpreter
        finalization) is time nobody needs to wait for."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        try:
            if proc.stdin is not None:
                env_worker.write_frame(proc.stdin, {"op": "close"})
                proc.stdin.close()
            proc.wait(timeout=grace)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


class _Call:
    """One caller's rows, waiting to be predicted together with other callers'."""

    def __init__(self, frame: Any, params: dict[str, Any] | None) -> None:
        self.frame = frame
        self.params = params
        self.key = (tuple(map(str, frame.columns)), tuple(map(str, frame.dtypes)), repr(params))
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


def _split(result: Any, sizes: list[int]) -> list[Any] | None:
    """``result`` cut into consecutive parts of ``sizes`` rows; None unless it has exactly
    one row per input row."""
    import pandas as pd

    try:
        if len(result) != sum(sizes):
            return None
    except TypeError:
        return None
    parts, start = [], 0
    for n in sizes:
        if isinstance(result, (pd.DataFrame, pd.Series)):
            parts.append(result.iloc[start : start + n].reset_index(drop=True))
        else:
            parts.append(result[start : start + n])
        start += n
    return parts


class Coalescer:
    """Concurrent callers' rows predicted in one call to the worker.

    A server answers requests on several threads, but a model in its own environment has
    one worker: requests would wait in line, each paying the model's fixed cost per call
    (AutoML's featurizer: milliseconds for one row or a thousand). Requests that arrive
    while a call runs go together into the next call (same columns, types and params, up to
    ``max_rows``), and its answer is cut back into each request's rows. A call that raises
    is retried request by request, so that one bad request fails alone; a dead worker fails
    every request of the call at once. Rows must be predicted independently of each other,
    as tabular models do; ``LIFECYCLE_ENV_COALESCE=0`` turns this off.
    """

    def __init__(self, worker: EnvWorker, max_rows: int = 10_000) -> None:
        self.worker = worker
        self.max_rows = max_rows
        self.calls = 0
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._thread: threading.Thread | None = None
        self._owner = 0

    def predict(self, frame: Any, params: dict[str, Any] | None) -> Any:
        """The prediction for ``frame``, possibly computed together with others'."""
        call = _Call(frame, params)
        with self._cond:
            if self._thread is None or self._owner != os.getpid():
                self._owner = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="env-coalescer", daemon=True
                )
                self._thread.start()
            self._pending.append(call)
            self._cond.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _take(self) -> list[_Call]:
        with self._cond:
            while not self._pending:
                self._cond.wait()
            first = self._pending[0]
            batch: list[_Call] = []
            rows = 0
            for call in self._pending:
                if call.key == first.key and (not batch or rows + len(call.frame) <= self.max_rows):
                    batch.append(call)
                    rows += len(call.frame)
            self._pending = [c for c in self._pending if c not in batch]
            return batch

    def _loop(self) -> None:
        while True:
            self._run(self._take())

    def _one(self, call: _Call) -> None:
        try:
            call.finish(self.worker.predict(call.frame, params=call.params))
        except BaseException as exc:  # handed to the caller's thread
            call.finish(error=exc)

    def _run(self, batch: list[_Call]) -> None:
        import pandas as pd

        self.calls += 1
        if len(batch) == 1:
            self._one(batch[0])
            return
        frame = pd.concat([c.frame for c in batch], ignore_index=True)
        try:
            parts = _split(
                self.worker.predict(frame, params=batch[0].params), [len(c.frame) for c in batch]
            )
        except ModelEnvError as exc:
            for call in batch:
                call.finish(error=exc)
            return
        except Exception:
            parts = None
        if parts is None:  # a bad request among them, or not one row per row: one by one
            for call in batch:
                self._one(call)
            return
        for call, part in zip(batch, parts, strict=True):
            call.finish(part)


class EnvModelImpl:
    """The ``model_impl`` of a ``PyFuncModel`` whose model runs in an :class:`EnvWorker`;
    concurrent calls are coalesced (:class:`Coalescer`) unless ``LIFECYCLE_ENV_COALESCE=0``
    or :meth:`use_parallel_workers` gave it several workers (batch scoring)."""

    def __init__(self, worker: EnvWorker) -> None:
        self.worker = worker
        enabled = os.environ.get("LIFECYCLE_ENV_COALESCE", "1") != "0"
        self.coalescer = Coalescer(worker) if enabled else None
        self._free: queue.SimpleQueue[EnvWorker] | None = None

    def use_parallel_workers(self, workers: list[EnvWorker]) -> None:
        """Score with ``workers`` (this one's first), each call on a free one (chunks of a
        batch run side by side, one per core) instead of coalescing calls into one."""
        free: queue.SimpleQueue[EnvWorker] = queue.SimpleQueue()
        for worker in workers:
            free.put(worker)
        self.coalescer = None
        self._free = free

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Predict in the worker (or a free one of several)."""
        import pandas as pd

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        if self._free is not None:
            worker = self._free.get()
            try:
                return worker.predict(frame, params=params)
            finally:
                self._free.put(worker)
        if self.coalescer is None:
            return self.worker.predict(frame, params=params)
        return self.coalescer.predict(frame, params)


def env_pyfunc(model_dir: str, spec: EnvSpec, *, allow_pickle: bool, workers: int = 1) -> Any:
    """A ``PyFuncModel`` for the MLflow model in ``model_dir`` whose predictions are
    computed by a worker in ``spec``'s environment (``workers`` > 1: that many, used side by
    side, for batch scoring).

    The workers are started first, so that their imports (seconds, for AutoML's runtime)
    overlap with each other's and with MLflow's import here.

    Raises:
        ModelEnvError: the model has no python_function flavor, its environment is not
            prepared, or it fails to load there.
    """
    import yaml

    raw = yaml.safe_load((Path(model_dir) / "MLmodel").read_text(encoding="utf-8")) or {}
    conf = (raw.get("flavors") or {}).get("python_function")
    if not conf or not conf.get("loader_module"):
        raise ModelEnvError(
            f"the model in '{model_dir}' has no python_function loader to run in its environment"
        )
    keys = ("loader_module", "code", "data", "predict_fn", "model_config")
    started = [
        EnvWorker(
            model_dir, spec, {k: conf.get(k) for k in keys}, allow_pickle=allow_pickle, wait=False
        )
        for _ in range(max(1, workers))
    ]
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel

    meta = Model.load(str(Path(model_dir) / "MLmodel"))
    try:
        for worker in started:
            worker.wait_ready()
    except BaseException:
        for worker in started:
            worker.close()
        raise
    impl = EnvModelImpl(started[0])
    if len(started) > 1:
        impl.use_parallel_workers(started)
    model = PyFuncModel(model_meta=meta, model_impl=impl, predict_fn="predict")
    try:
        model.input_example = meta.load_input_example(path=model_dir)  # type: ignore[attr-defined]
    except Exception as exc:  # as mlflow.pyfunc.load_model: an example is optional
        logger.debug("no input example: %s", exc)
    return model


def env_impl_of(model: Any) -> EnvModelImpl | None:
    """The :class:`EnvModelImpl` behind a pyfunc from :func:`env_pyfunc` (None for others)."""
    impl = getattr(model, "_model_impl", None)
    return impl if isinstance(impl, EnvModelImpl) else None


def worker_of(model: Any) -> EnvWorker | None:
    """The :class:`EnvWorker` behind a pyfunc from :func:`env_pyfunc` (None for others)."""
    impl = getattr(model, "_model_impl", None)
    return impl.worker if isinstance(impl, EnvModelImpl) else None


@atexit.register
def _close_all() -> None:
    workers = list(_LIVE)
    if len(workers) <= 1:
        for worker in workers:
            worker.close()
        return
    # Side by side: each may take its grace period.
    threads = [threading.Thread(target=w.close) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
