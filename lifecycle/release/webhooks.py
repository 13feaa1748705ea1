"""MLflow registry webhooks for the release controller: a small HTTP receiver that checks
MLflow's HMAC signature (``X-MLflow-Signature: v1,<base64 HMAC-SHA256 of
"<delivery id>.<timestamp>.<body>">``) and timestamp, and wakes the controller on a new model
version; and the registration (or verification) of the webhook on each source server.

MLflow (3.3+) delivers webhooks from its server process only, so a workspace without a
tracking server (a local SQLite store) is polled instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lifecycle.base.errors import ConfigError
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

#: The environment variable holding the shared secret of the webhooks.
SECRET_VAR = "LIFECYCLE_WEBHOOK_SECRET"
#: Deliveries older (or newer) than this many seconds are refused (replays).
MAX_SKEW_S = 300
#: The events the controller subscribes to.
EVENTS = ["model_version.created", "model_version_alias.created", "model_version_tag.set"]
_MAX_BODY = 1 << 20


def signature_error(secret: str, headers: Any, body: bytes, now: float | None = None) -> str | None:
    """Why a delivery's signature or timestamp is not acceptable, or None when it is."""
    delivery = headers.get("X-MLflow-Delivery-Id") or ""
    stamp = headers.get("X-MLflow-Timestamp") or ""
    given = headers.get("X-MLflow-Signature") or ""
    if not (delivery and stamp and given):
        return "missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature"
    try:
        skew = abs((time.time() if now is None else now) - int(stamp))
    except ValueError:
        return f"bad timestamp {stamp!r}"
    if skew > MAX_SKEW_S:
        return f"timestamp {stamp} is {skew:.0f}s away from now (over {MAX_SKEW_S}s)"
    signed = f"{delivery}.{stamp}.{body.decode('utf-8', 'replace')}".encode()
    digest = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(given, f"v1,{digest}"):
        return "signature does not match"
    return None


class WebhookReceiver:
    """``POST /webhook`` on ``host:port``: a verified delivery sets ``wake``."""

    def __init__(self, host: str, port: int, secret: str, wake: threading.Event) -> None:
        self.secret, self.wake = secret, wake
        self.received = 0
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.rstrip("/") != "/webhook" or length > _MAX_BODY:
                    self.send_error(404 if length <= _MAX_BODY else 413)
                    return
                body = self.rfile.read(length)
                why = signature_error(receiver.secret, self.headers, body)
                if why is not None:
                    receiver.refused += 1
                    logger.warning("refused a webhook delivery: %s", why)
                    self.send_error(401, why)
                    return
                receiver.received += 1
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {}
                logger.info(
                    "webhook %s.%s: %s",
                    event.get("entity"),
                    event.get("action"),
                    json.dumps(event.get("data"))[:200],
                )
                self.send_response(204)
                self.end_headers()
                receiver.wake.set()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                logger.debug(format, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serves_webhooks(ws: Workspace) -> bool:
    """True when ``ws`` is an MLflow tracking server (which can deliver webhooks)."""
    return ws.registry_uri.startswith(("http://", "https://"))


def register(ws: Workspace, url: str, secret: str) -> str:
    """Create the controller's webhook on ``ws`` (or update the one it made before, found by
    name) so that it posts the model-version events to ``url`` signed with ``secret``.
    Returns the webhook id.

    Raises:
        ConfigError: the server refused (an MLflow older than 3.3, or webhook URLs it does
            not allow: see ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES``).
    """
    client = ws.client()
    name = f"lifecycle-release-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    try:
        existing = [w for w in client.list_webhooks() if w.name == name]
        if existing:
            hook = client.update_webhook(
                existing[0].webhook_id, url=url, events=EVENTS, secret=secret, status="ACTIVE"
            )
        else:
            hook = client.create_webhook(name, url, EVENTS, secret=secret)
    except Exception as exc:
        raise ConfigError(
            f"Cannot register the release webhook on workspace '{ws.name}' ({url}): "
            f"{exc}".splitlines()[0]
        ) from exc
    logger.info("webhook %s on '%s' posts to %s", hook.webhook_id, ws.name, url)
    return str(hook.webhook_id)
