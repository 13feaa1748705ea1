"""The model files of a scoring run: a local directory as is, a registry URI resolved and
downloaded, in a child process when this one has not imported MLflow.

Owns :class:`ModelFetch`. A ``models:/`` URI needs MLflow (its import and its store, ~3 s and
~110 MB). Done in this process, those modules would stay in memory beside every chunk in
flight; done in ``python -m batch.fetch --child``, they leave with the child before the
scoring starts (at 5M rows: peak RSS ~380 MB instead of ~470 MB, and the child ends without
the interpreter's teardown). A process that has already imported MLflow (a notebook, a test)
resolves in process: nothing would be saved.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from lifecycle.errors import ScoringError
from lifecycle.uris import ResolvedModel, parse_model_uri, resolve_model
from lifecycle.workspaces import Workspace


class ModelFetch:
    """Resolve ``model_uri`` in ``ws`` and make its files local, for a ``with`` block.

    Started on entry (the child, if any, runs while the caller goes on); :meth:`result`
    waits. Downloaded files are removed on exit.
    """

    def __init__(self, ws: Workspace, model_uri: str) -> None:
        self.ws = ws
        self.uri = model_uri
        self.ref = parse_model_uri(model_uri)
        self.in_child = self.ref.path is None and "mlflow" not in sys.modules
        self.tmp: str | None = None
        self._call: Any = None

    def __enter__(self) -> ModelFetch:
        if self.ref.path is None:
            self.tmp = tempfile.mkdtemp(prefix="lifecycle-score-")
        if self.in_child:
            from lifecycle.child import ChildCall, workspace_spec

            spec = {"workspace": workspace_spec(self.ws), "model_uri": self.uri, "dst": self.tmp}
            self._call = ChildCall("batch.fetch", spec, ScoringError, "Resolving the model")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._call is not None:
            self._call.__exit__(*exc)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def result(self) -> tuple[ResolvedModel, str]:
        """The resolved version and the local directory of its files.

        Raises:
            ModelNotFoundError: the model, version, stage or alias does not exist.
            ScoringError: the files could not be fetched.
        """
        if self.ref.path is not None:
            return resolve_model(self.ws, self.ref), str(Path(self.ref.path).resolve())
        assert self.tmp is not None
        if self._call is None:
            resolved = resolve_model(self.ws, self.ref)
            return resolved, download(self.ws, resolved.pinned_uri, self.tmp)
        got = self._call.result()
        resolved = ResolvedModel(
            workspace=self.ws,
            ref=self.ref,
            name=got["name"],
            version=got["version"],
            stage=got["stage"],
            run_id=got["run_id"],
            source=got["source"],
        )
        return resolved, str(got["path"])


def download(ws: Workspace, pinned_uri: str, dst: str) -> str:
    """Download ``pinned_uri``'s files from ``ws`` into ``dst``; the local model directory."""
    import mlflow.artifacts

    from lifecycle.workspaces import quiet_mlflow_progress, use_workspace

    with use_workspace(ws), quiet_mlflow_progress():
        return str(mlflow.artifacts.download_artifacts(artifact_uri=pinned_uri, dst_path=dst))


def _fetch_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``--child`` side of :class:`ModelFetch`."""
    ws = Workspace(**spec["workspace"])
    resolved = resolve_model(ws, spec["model_uri"])
    path = download(ws, resolved.pinned_uri, spec["dst"])
    return {
        "name": resolved.name,
        "version": resolved.version,
        "stage": resolved.stage,
        "run_id": resolved.run_id,
        "source": resolved.source,
        "path": path,
    }


if __name__ == "__main__":
    from lifecycle.child import CHILD_FLAG, child_main

    if sys.argv[1:] != [CHILD_FLAG]:
        raise SystemExit(f"usage: python -m batch.fetch {CHILD_FLAG} < spec.json")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with contextlib.suppress(BrokenPipeError):
        child_main(_fetch_in_child, "ScoringError")
