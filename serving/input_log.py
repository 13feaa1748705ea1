"""``--log-inputs DIR``: requests' inputs and predictions appended to rotating Parquet files.

Each flush writes one new part file ``inputs-<UTC time>-<pid>-<seq>.parquet`` (written to a
temporary name and renamed, so readers never see half a file), with the feature columns,
``prediction`` (or ``prediction_<i>`` for multi-output models), ``_ts`` (UTC time of the
answer) and ``_model_version``. Monitoring reads the folder as one Parquet data set.
A flush happens every ``flush_seconds``, whenever ``rotate_rows`` rows are buffered, and
at shutdown. Logging never slows or fails a request: the work happens on a thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle.base.files import atomic_path

logger = logging.getLogger(__name__)


@dataclass
class FastInput:
    """A fast-path request's matrix and its column names (made a DataFrame off the loop)."""

    matrix: np.ndarray
    columns: tuple[str, ...]


class InputLog:
    """Buffers (input, predictions) pairs and writes them as Parquet part files.

    Args:
        directory: folder of the part files (created).
        rotate_rows: write a part file once this many rows are buffered.
        flush_seconds: write buffered rows at least this often.
    """

    def __init__(
        self, directory: str | Path, rotate_rows: int = 10_000, flush_seconds: float = 5.0
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_rows = rotate_rows
        self.flush_seconds = flush_seconds
        self._items: list[tuple[Any, Any, str | None, float]] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name="input-log", daemon=True)
        self._thread.start()

    def __call__(self, data: Any, predictions: Any, info: Any) -> None:
        """Queue one answered request (cheap; called on the serving loop)."""
        n = len(data.matrix) if isinstance(data, FastInput) else _length(data)
        with self._lock:
            self._items.append((data, predictions, getattr(info, "version", None), time.time()))
            self._rows += n
            if self._rows >= self.rotate_rows:
                self._wake.set()

    def close(self) -> None:
        """Write what is buffered and stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> Path | None:
        """Write the buffered rows as one part file; return its path (None when empty)."""
        with self._lock:
            items, self._items, self._rows = self._items, [], 0
        if not items:
            return None
        try:
            return self._write(items)
        except Exception:  # monitoring must never take the server down
            logger.exception("could not write %d logged request(s)", len(items))
            return None

    def _write(self, items: list[tuple[Any, Any, str | None, float]]) -> Path:
        import pandas as pd

        frames = []
        for data, preds, version, ts in items:
            frame = _frame(data)
            out = np.asarray(preds)
            if out.ndim == 1:
                frame["prediction"] = out
            else:
                for i in range(out.shape[1]):
                    frame[f"prediction_{i}"] = out[:, i]
            frame["_ts"] = pd.Timestamp(ts, unit="s", tz="UTC")
            frame["_model_version"] = version
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"inputs-{stamp}-{os.getpid()}-{next(self._seq):05d}.parquet"
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
        logger.debug("logged %d row(s) to %s", len(table), path)
        return path


def _frame(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, FastInput):
        return pd.DataFrame(data.matrix, columns=list(data.columns))
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True).copy()
    if isinstance(data, dict):
        return pd.DataFrame({k: list(np.asarray(v)) for k, v in data.items()})
    arr = np.asarray(data)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim > 2:
        arr = arr.reshape(len(arr), -1)
    return pd.DataFrame(arr, columns=[f"input_{i}" for i in range(arr.shape[1])])


def _length(data: Any) -> int:
    try:
        return len(data)
    except TypeError:
        return 1
