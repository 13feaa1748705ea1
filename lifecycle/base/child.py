"""One step run in a child Python process, with its errors carried back unchanged.

Owns the small protocol used where a step that needs MLflow (resolving a ``models:/`` URI,
downloading the version) is better done in another process: beside this one's own imports
on a second core, and without MLflow's modules (~110 MB) staying in this process's memory.
The child is ``python -m MODULE --child``; it reads a JSON spec on stdin and writes one JSON
document on stdout: ``{"result": ...}`` or ``{"error": CLASS, "message": ...}``, where CLASS
is a :class:`~lifecycle.base.errors.LifecycleError` subclass, re-raised here with the same message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from lifecycle.base import errors
from lifecycle.base.workspaces import Workspace

CHILD_FLAG = "--child"


def workspace_spec(ws: Workspace) -> dict[str, Any]:
    """``ws`` as JSON-friendly keyword arguments of :class:`Workspace` (``extra`` left out)."""
    return {k: v for k, v in ws.__dict__.items() if k != "extra"}


class ChildCall:
    """``python -m module --child`` started now with ``spec`` on stdin; :meth:`result` waits.

    ``fallback`` is the error class for a child that fails outside the toolkit's errors or
    dies without answering; ``what`` names the step in that message. Leaving the context
    kills a child still running.
    """

    def __init__(
        self, module: str, spec: dict[str, Any], fallback: type[errors.LifecycleError], what: str
    ) -> None:
        self.fallback = fallback
        self.what = what
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, CHILD_FLAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec).encode())
        self.proc.stdin.close()

    def __enter__(self) -> ChildCall:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self) -> Any:
        """The child's result (waits for it).

        Raises:
            LifecycleError: what the child raised (same class, same message), or
                ``fallback`` when it died without answering.
        """
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait()
        try:
            doc = json.loads(out)
        except ValueError:
            raise self.fallback(
                f"{self.what} failed (the child process exited with {code})"
            ) from None
        if "error" in doc:
            cls = getattr(errors, str(doc["error"]), None)
            if not (isinstance(cls, type) and issubclass(cls, errors.LifecycleError)):
                cls = self.fallback
            raise cls(str(doc["message"]))
        return doc["result"]


def child_main(handler: Callable[[dict[str, Any]], Any], fallback: str) -> None:
    """The child's side: ``handler(spec)``'s result, or its error, as JSON on stdout.

    ``fallback`` names the error class reported for exceptions outside the toolkit's own
    (the spec's ``error`` key, when present, names it instead).
    """
    spec = json.loads(sys.stdin.read())
    fallback = str(spec.get("error") or fallback)
    try:
        doc: dict[str, Any] = {"result": handler(spec)}
    except errors.LifecycleError as exc:
        doc = {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:
        doc = {"error": fallback, "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    sys.stdout.write(json.dumps(doc))
    sys.stdout.flush()
    # The step is complete and its files are closed: skip the interpreter's teardown of
    # MLflow's modules (~1 s), which the parent would otherwise wait for.
    os._exit(0)
