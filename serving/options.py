"""How a scoring server runs: :class:`ServeOptions` (one field per ``lifecycle serve`` option)
and the server-wide limits."""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.base.refs import ModelRef
from lifecycle.base.workspaces import Workspace

API_KEY_ENV = "LIFECYCLE_SERVE_API_KEY"
DEFAULT_MAX_BODY = 16 * 1024 * 1024


@dataclass
class ServeOptions:
    """How the server runs (every field has a CLI option of ``lifecycle serve``)."""

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    timeout: float = 60.0
    log_inputs: str | None = None
    poll_interval: float = 30.0
    max_batch_rows: int = 4096
    drain_seconds: float = 30.0
    record: bool = True
    #: With ``record``: also record the start itself (False in a worker whose supervisor
    #: records the start, so that the worker records only the versions it swaps in).
    record_start: bool = True
    threads: int = 4
    cache: bool = True
    #: With several workers: the folder where each writes its counters, so /metrics on any
    #: worker reports the whole server.
    metrics_dir: str | None = None
    #: Open connections per worker beyond which a new one is answered 503 and closed.
    max_connections: int = 1024
    #: Seconds a client has to send a whole request once its first byte arrived (else 408).
    header_timeout: float = 10.0
    #: Seconds an idle keep-alive connection is kept open.
    keepalive_timeout: float = 5.0
    #: A model directory's name and version as the server reports them (``/version``, V2
    #: metadata and routes); a registered version's come from the registry.
    model_name: str | None = None
    model_version: str | None = None


# --------------------------------------------------------------------------- metrics


@dataclass
class ServeTarget:
    """What a server serves and how: the workspace (None for a model directory), the parsed
    model reference, and the options. Travels from ``serve`` to every worker."""

    ws: Workspace | None
    ref: ModelRef
    options: ServeOptions
