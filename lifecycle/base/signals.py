"""SIGTERM and SIGINT as exceptions, so that a command being stopped runs its own rollback.

The CLI calls :func:`install` once. SIGINT already raises :class:`KeyboardInterrupt`; SIGTERM
(what a CI runner or ``timeout`` sends first) then raises :class:`Terminated`, a subclass of
it, in the main thread. Code that must not be cut short (the undo of a promotion) runs under
:func:`deferred`: a signal that arrives there is held and raised when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

logger = logging.getLogger(__name__)

_state = threading.local()
_pending: list[int] = []


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + self.signum


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    if getattr(_state, "depth", 0) > 0:
        logger.warning(
            "%s received during a rollback: held until it ends", signal.Signals(signum).name
        )
        _pending.append(signum)
        return
    _raise(signum)


def install() -> None:
    """Turn SIGTERM and SIGINT into exceptions in the main thread (CLI only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block ends, then raise the first one that came."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            _raise(signum)
