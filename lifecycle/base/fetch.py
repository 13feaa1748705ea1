"""Resolving a model URI in a workspace and making its files local: the one way the toolkit
fetches a model (serve, score, the warm-start cache, monitoring, gates, Azure specs).

Owns :func:`fetch_model` (in this process) and :class:`ModelFetch` (the same, in a child
process when that helps). A ``models:/`` URI needs MLflow (its import and its store, ~3 s and
~110 MB). Done in ``python -m lifecycle.base.fetch --child``, that work runs beside the
caller's own imports on a second core, and MLflow's modules leave with the child instead of
staying in memory beside every chunk a batch run has in flight (at 5M rows: peak RSS ~380 MB
instead of ~470 MB; the child ends without the interpreter's teardown). A process that has
already imported MLflow resolves in process: nothing would be saved.

Loading what was fetched is :mod:`lifecycle.base.loader`'s business.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lifecycle.base import errors
from lifecycle.base.consent import require_consent
from lifecycle.base.errors import LifecycleError, ScoringError
from lifecycle.base.refs import ModelRef, ResolvedModel, parse_model_uri, resolve_model
from lifecycle.base.tags import DIGEST_TAG, PICKLE_CONSENT_TAG
from lifecycle.base.workspaces import Workspace


@dataclass
class FetchedModel:
    """A resolved version and the local directory of its files."""

    resolved: ResolvedModel
    path: str
    #: The version's content digest (its tag; computed from the files when asked and absent).
    digest: str | None = None
    #: True when ``path`` is a download (not a model directory or the store's own folder).
    downloaded: bool = False
    #: The consent to unpickle recorded on the version (its tag's value), if any.
    consent: str | None = None


def fetch_model(
    ws: Workspace,
    uri: str | ModelRef,
    dst: str | None,
    *,
    in_place: bool = False,
    digest: bool = False,
    error: type[LifecycleError] = ScoringError,
    trust_pickle: bool | None = None,
    restricted_action: str | None = None,
) -> FetchedModel:
    """Resolve ``uri`` in ``ws`` and make its files local, in this process, refusing files
    that would unpickle without the user's consent (:mod:`lifecycle.base.consent`).

    Args:
        dst: the folder a download goes to (unused for a local model directory).
        in_place: use the artifact store's own folder when it is local (nothing copied).
        digest: fill :attr:`FetchedModel.digest` from the files when the version has no
            digest tag.
        error: the error class for files that cannot be downloaded.
        trust_pickle: the command's ``--trust-pickle`` (None: ``$LIFECYCLE_TRUST_PICKLE``).
        restricted_action: ``serve``, ``score`` or ``deploy``: refuse a restricted version
            (:mod:`lifecycle.base.restrict`) before downloading it.

    Raises:
        ModelNotFoundError: the model, version, stage or alias does not exist.
        LifecycleError: ``error``, the files could not be downloaded.
        UntrustedPickleError: loading the files would unpickle, and neither the version's
            recorded consent nor ``trust_pickle`` allows it.
        RestrictedVersionError: ``restricted_action`` and the version is restricted.
    """
    ref = parse_model_uri(uri) if isinstance(uri, str) else uri
    resolved = resolve_model(ws, ref)
    tag = consent = None
    if resolved.model_version is not None:
        vtags = resolved.model_version.tags or {}
        tag, consent = vtags.get(DIGEST_TAG), vtags.get(PICKLE_CONSENT_TAG)
        if restricted_action and ref.path is None:
            from lifecycle.base.restrict import require_unrestricted

            require_unrestricted(
                ws, str(resolved.name), str(resolved.version), vtags, action=restricted_action
            )
    local = local_model_dir(resolved.source) if in_place else None
    downloaded = False
    if ref.path is not None:
        path = str(Path(ref.path).resolve())
    elif local is not None:
        path = local
    else:
        assert dst is not None, "a registry URI needs a download folder"
        downloaded = True
        try:
            path = download(ws, resolved.pinned_uri, dst)
        except Exception as exc:
            raise error(
                f"Cannot download {resolved.pinned_uri} from workspace '{ws.name}': "
                f"{exc}".splitlines()[0]
            ) from exc
    is_version = resolved.model_version is not None and ref.path is None
    require_consent(
        path,
        recorded=consent,
        name=resolved.name if is_version else None,
        version=resolved.version if is_version else None,
        workspace=ws.name,
        trust_pickle=trust_pickle,
    )
    if tag is None and digest:
        from lifecycle.base.digest import model_digest

        tag = model_digest(path)
    return FetchedModel(resolved, path, tag, downloaded, consent)


class ModelFetch:
    """:func:`fetch_model` for a ``with`` block, in a child process when that helps.

    Started on entry (the child, if any, runs while the caller goes on); :meth:`result`
    waits. A download folder made here (no ``dst`` given) is removed on exit.

    Args:
        child: True/False forces the choice; None: a child when the URI names a registry
            version and MLflow is not imported in this process yet.
        dst, in_place, digest, error, trust_pickle, restricted_action: as for
            :func:`fetch_model`.
    """

    def __init__(
        self,
        ws: Workspace,
        uri: str | ModelRef,
        *,
        dst: str | None = None,
        in_place: bool = False,
        digest: bool = False,
        error: type[LifecycleError] = ScoringError,
        child: bool | None = None,
        trust_pickle: bool | None = None,
        restricted_action: str | None = None,
    ) -> None:
        self.ws = ws
        self.ref = parse_model_uri(uri) if isinstance(uri, str) else uri
        self.dst = dst
        self.in_place, self.digest, self.error = in_place, digest, error
        self.trust_pickle = trust_pickle
        self.restricted_action = restricted_action
        if child is None:
            child = "mlflow" not in sys.modules
        self.in_child = child and self.ref.path is None
        self._own_tmp: str | None = None
        self._call: Any = None

    def __enter__(self) -> ModelFetch:
        if self.ref.path is None and self.dst is None:
            self._own_tmp = self.dst = tempfile.mkdtemp(prefix="lifecycle-fetch-")
        if self.in_child:
            from lifecycle.base.child import ChildCall, workspace_spec

            spec = {
                "workspace": workspace_spec(self.ws),
                "model_uri": str(self.ref),
                "dst": self.dst,
                "in_place": self.in_place,
                "digest": self.digest,
                "error": self.error.__name__,
                "trust_pickle": self.trust_pickle,
                "restricted_action": self.restricted_action,
            }
            self._call = ChildCall("lifecycle.base.fetch", spec, self.error, "Resolving the model")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._call is not None:
            self._call.__exit__(*exc)
        if self._own_tmp:
            shutil.rmtree(self._own_tmp, ignore_errors=True)

    def result(self) -> FetchedModel:
        """The fetched model (waits for the child, if any).

        Raises:
            ModelNotFoundError: the model, version, stage or alias does not exist.
            LifecycleError: what the child raised (same class, same message), or the
                ``error`` class when the files could not be fetched.
        """
        if self._call is None:
            return fetch_model(
                self.ws,
                self.ref,
                self.dst,
                in_place=self.in_place,
                digest=self.digest,
                error=self.error,
                trust_pickle=self.trust_pickle,
                restricted_action=self.restricted_action,
            )
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
        return FetchedModel(
            resolved,
            str(got["path"]),
            got["digest"],
            bool(got["downloaded"]),
            got.get("consent"),
        )


def download(ws: Workspace, pinned_uri: str, dst: str) -> str:
    """Download ``pinned_uri``'s files from ``ws`` into ``dst``; the local model directory."""
    import mlflow.artifacts

    from lifecycle.base.workspaces import quiet_mlflow_progress, use_workspace

    with use_workspace(ws), quiet_mlflow_progress():
        return str(mlflow.artifacts.download_artifacts(artifact_uri=pinned_uri, dst_path=dst))


def local_model_dir(source: str | None) -> str | None:
    """The local directory of a version's ``file:`` (or plain path) source, if it is one."""
    if not source:
        return None
    parsed = urlparse(source)
    if parsed.scheme == "file":
        candidate = Path(unquote(parsed.path))
    elif parsed.scheme == "" and source.startswith("/"):
        candidate = Path(source)
    else:
        return None
    return str(candidate) if (candidate / "MLmodel").is_file() else None


def _fetch_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``--child`` side of :class:`ModelFetch`."""
    ws = Workspace(**spec["workspace"])
    error = getattr(errors, str(spec.get("error")), ScoringError)
    got = fetch_model(
        ws,
        spec["model_uri"],
        spec["dst"],
        in_place=bool(spec.get("in_place")),
        digest=bool(spec.get("digest")),
        error=error,
        trust_pickle=spec.get("trust_pickle"),
        restricted_action=spec.get("restricted_action"),
    )
    r = got.resolved
    return {
        "name": r.name,
        "version": r.version,
        "stage": r.stage,
        "run_id": r.run_id,
        "source": r.source,
        "path": got.path,
        "digest": got.digest,
        "downloaded": got.downloaded,
        "consent": got.consent,
    }


if __name__ == "__main__":
    from lifecycle.base.child import CHILD_FLAG, child_main

    if sys.argv[1:] != [CHILD_FLAG]:
        raise SystemExit(f"usage: python -m lifecycle.base.fetch {CHILD_FLAG} < spec.json")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with contextlib.suppress(BrokenPipeError):
        child_main(_fetch_in_child, "ScoringError")
