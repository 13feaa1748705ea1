"""Test-only fault injection at named steps of registry commands.

``$LIFECYCLE_TEST_FAULT`` holds ``STEP=ACTION`` pairs separated by commas; at
:func:`fault_point` ``STEP`` the process does ``ACTION``:

- ``pause:SECONDS`` sleeps (widens a race window so that a test without the lock loses);
- ``kill`` sends itself SIGKILL (a runner killed by a timeout, a closed laptop);
- ``term`` sends itself SIGTERM (what CI sends first when a job is cancelled);
- ``fail`` raises :class:`InjectedFault` (an error at exactly that point).

Unset, :func:`fault_point` costs one dictionary lookup. The reliability tests name the
steps; the steps are listed where they are called (``grep fault_point``).
"""

from __future__ import annotations

import logging
import os
import signal
import time

logger = logging.getLogger(__name__)

ENV_VAR = "LIFECYCLE_TEST_FAULT"


class InjectedFault(RuntimeError):
    """The failure a test asked for at a named step."""


def _actions(step: str) -> list[str]:
    spec = os.environ.get(ENV_VAR, "")
    if not spec:
        return []
    found = []
    for item in spec.split(","):
        name, _, action = item.strip().partition("=")
        if name == step and action:
            found.append(action)
    return found


def fault_point(step: str) -> None:
    """Do what ``$LIFECYCLE_TEST_FAULT`` asks for at ``step`` (nothing when it is unset)."""
    for action in _actions(step):
        kind, _, arg = action.partition(":")
        logger.warning("test fault at %s: %s", step, action)
        if kind == "pause":
            time.sleep(float(arg or 0.5))
        elif kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "term":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises in this thread before this returns
        elif kind == "fail":
            raise InjectedFault(f"injected failure at step '{step}'")
        else:
            raise ValueError(f"{ENV_VAR}: unknown action '{action}' (pause:S, kill, term, fail)")
