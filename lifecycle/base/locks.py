"""A lock per (workspace, registered model) around every read-then-write on the model: a
stage move reads the current holders and then writes, a promotion checks the target for the
same content digest and then registers. Without it, four transitions at once left two
versions in Production (issue #15).

For a store on this machine's disk (SQLite, a file store) the lock is a file lock
(:mod:`filelock`) beside the store, so separate processes exclude each other. A remote
server is shared by runners on other machines, which a file lock cannot reach: there the lock
is a lease held in the registry itself (:mod:`lifecycle.base.lease`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from lifecycle.base.errors import RegistryBusyError
from lifecycle.base.workspaces import Workspace, sqlite_path

logger = logging.getLogger(__name__)

#: Seconds a command waits for another one's lock on the same model before giving up.
DEFAULT_TIMEOUT = 300.0
_CACHE: dict[str, object] = {}
_CACHE_LOCK = threading.Lock()
_HELD = threading.local()  # remote leases this thread holds: key -> depth


def lock_path(ws: Workspace, name: str) -> Path | None:
    """The lock file of model ``name`` in ``ws`` (None for a remote registry)."""
    uri = ws.registry_uri or ws.tracking_uri
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = sqlite_path(uri)
        if db is None:
            return None
        base = db.resolve().parent
    elif parsed.scheme in ("file", ""):
        base = Path(parsed.path if parsed.scheme == "file" else uri).resolve()
    else:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return base / ".locks" / f"{safe}.lock"


@contextlib.contextmanager
def model_lock(
    ws: Workspace,
    name: str,
    timeout: float | None = None,
    purpose: str = "",
    create: bool = False,
) -> Iterator[None]:
    """Hold the lock of model ``name`` in ``ws`` for the block (re-entrant in a thread).

    ``purpose`` is shown to other commands that wait for a remote lease; ``create`` lets the
    lease create a missing model (a promotion's target), else a missing one is an error.

    Raises:
        RegistryBusyError: another command held it for ``timeout`` seconds
            (``$LIFECYCLE_LOCK_TIMEOUT``, default 300).
    """
    from filelock import FileLock, Timeout

    wait = (
        timeout
        if timeout is not None
        else float(os.environ.get("LIFECYCLE_LOCK_TIMEOUT", DEFAULT_TIMEOUT))
    )
    path = lock_path(ws, name)
    if path is None:
        with _remote_lease(ws, name, wait, purpose, create):
            yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _CACHE_LOCK:  # one FileLock object per file: re-entrant within a thread
        lock = _CACHE.setdefault(str(path), FileLock(str(path)))
    assert isinstance(lock, FileLock)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RegistryBusyError(
            f"Model '{name}' in workspace '{ws.name}' is busy: another command has held its "
            f"lock ({path}) for {wait:.0f} s; try again, or raise LIFECYCLE_LOCK_TIMEOUT"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _remote_lease(
    ws: Workspace, name: str, wait: float, purpose: str, create: bool
) -> Iterator[None]:
    from lifecycle.base.lease import Lease

    key = f"{ws.registry_uri or ws.tracking_uri}\n{name}"
    held: dict[str, int] = _HELD.__dict__.setdefault("depth", {})
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    lease = Lease(ws, name, purpose, create)
    lease.acquire(wait)
    held[key] = 1
    try:
        yield
    finally:
        held[key] = 0
        lease.release()
