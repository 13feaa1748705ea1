"""A lease on a registered model of a remote registry, held in the registry itself.

Two runners on two machines share only the tracking server, so a file lock cannot make them
exclude each other. Each command that wants the model writes its own claim, a
registered-model tag ``lifecycle.lease.<token>`` whose value names the owner (user, host,
pid), the purpose (``promote <id>``, ``transition``) and an expiry, and then decides by
Lamport's bakery algorithm, which needs nothing from the server but tags that are read and
written whole:

1. write the claim with ``choosing: true``;
2. read every claim; take a number one higher than any other's; write it, ``choosing: false``;
3. read every claim until none is choosing and none has a smaller (number, token) than ours.

A claim whose expiry has passed belongs to a command that died: it is deleted (taken over)
and a warning says whose it was. While a claim exists, a thread renews its expiry every third
of the time to live, so a slow promotion does not lose its lease; a killed one loses it after
``$LIFECYCLE_LEASE_TTL`` seconds (default 60). Releasing deletes the claim.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from lifecycle.base.errors import RegistryBusyError
from lifecycle.base.tags import LEASE_TAG_PREFIX
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

DEFAULT_TTL = 60.0


def _ttl() -> float:
    return float(os.environ.get("LIFECYCLE_LEASE_TTL", DEFAULT_TTL))


def owner_name() -> str:
    """``user@host:pid`` of this process (who holds a lease or a journal)."""
    from lifecycle.base.audit import current_user

    return f"{current_user()}@{socket.gethostname()}:{os.getpid()}"


class Lease:
    """One command's claim on the lease of model ``name`` in remote workspace ``ws``.

    With ``create`` (a promotion into a new model) a missing model is created to hold the
    claim; otherwise a missing model raises :class:`~lifecycle.base.errors.ModelNotFoundError`.
    """

    def __init__(self, ws: Workspace, name: str, purpose: str = "", create: bool = False) -> None:
        self.ws = ws
        self.name = name
        self.purpose = purpose
        self.create = create
        self.token = f"{time.time_ns():020d}{secrets.token_hex(4)}"
        self.key = f"{LEASE_TAG_PREFIX}{self.token}"
        self.number = 0
        self.choosing = True
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._write_lock = threading.Lock()

    # ---- the claim in the registry
    def _value(self) -> str:
        return json.dumps(
            {
                "owner": owner_name(),
                "purpose": self.purpose,
                "choosing": self.choosing,
                "number": self.number,
                "expires": time.time() + _ttl(),
            },
            sort_keys=True,
        )

    def _write(self) -> None:
        from mlflow.exceptions import MlflowException

        with self._write_lock:
            try:
                self.ws.client().set_registered_model_tag(self.name, self.key, self._value())
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                if not self.create:
                    from lifecycle.base.refs import get_registered_model

                    get_registered_model(self.ws, self.name)  # raises ModelNotFoundError
                    raise
                self._ensure_model()  # a promotion's new model: created to hold the lease
                self.ws.client().set_registered_model_tag(self.name, self.key, self._value())

    def _claims(self) -> dict[str, dict[str, Any]]:
        from lifecycle.base.errors import ModelNotFoundError
        from lifecycle.base.refs import get_registered_model

        try:
            tags = get_registered_model(self.ws, self.name).tags or {}
        except ModelNotFoundError:
            return {}  # deleted under us (an undone promotion's new model): claim again
        claims = {}
        for key, value in tags.items():
            if key.startswith(LEASE_TAG_PREFIX):
                try:
                    claims[key] = json.loads(value)
                except json.JSONDecodeError:
                    claims[key] = {"owner": "unreadable", "expires": 0}
        return claims

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.ws.client().create_registered_model(self.name)
            logger.info(
                "created registered model %s in '%s' to hold its lease", self.name, self.ws.name
            )
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise

    def _take_over_stale(self, claims: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        now = time.time()
        live = {}
        for key, claim in claims.items():
            if key != self.key and float(claim.get("expires", 0)) < now:
                logger.warning(
                    "lease of %s in '%s' held by %s (%s) expired %.0f s ago: taking it over",
                    self.name,
                    self.ws.name,
                    claim.get("owner"),
                    claim.get("purpose") or "no purpose given",
                    now - float(claim.get("expires", 0)),
                )
                try:
                    self.ws.client().delete_registered_model_tag(self.name, key)
                except Exception as exc:  # another taker deleted it first
                    logger.debug("stale claim %s already gone: %s", key, exc)
            else:
                live[key] = claim
        return live

    # ---- acquire / release
    def acquire(self, timeout: float) -> None:
        """Wait until this claim holds the lease.

        Raises:
            RegistryBusyError: another command held it for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        self._start()
        blocker: dict[str, Any] = {}
        try:
            while True:
                # 1-2: choosing, then a number above every other claim's.
                self.choosing, self.number = True, 0
                self._write()
                others = {k: c for k, c in self._claims().items() if k != self.key}
                self.number = 1 + max((int(c.get("number", 0)) for c in others.values()), default=0)
                self.choosing = False
                self._write()
                delay = 0.02
                while True:  # 3: wait for every claim ahead of ours
                    claims = self._take_over_stale(self._claims())
                    if self.key not in claims:
                        break  # the model was deleted under us: claim again (re-creates it)
                    ahead = [
                        c
                        for k, c in claims.items()
                        if k != self.key
                        and (
                            c.get("choosing")
                            or (int(c.get("number", 0)), k) < (self.number, self.key)
                        )
                    ]
                    if not ahead:
                        logger.debug("lease of %s in '%s' acquired", self.name, self.ws.name)
                        return
                    blocker = ahead[0]
                    if time.monotonic() > deadline:
                        raise RegistryBusyError(
                            f"Model '{self.name}' in workspace '{self.ws.name}' is busy: "
                            f"{blocker.get('owner')} ({blocker.get('purpose') or 'no purpose'}) "
                            f"has held its lease for {timeout:.0f} s; try again, or raise "
                            "LIFECYCLE_LOCK_TIMEOUT"
                        )
                    time.sleep(delay)
                    delay = min(delay * 1.5, 0.5)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Stop renewing and delete the claim (a missing one is fine)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        try:
            self.ws.client().delete_registered_model_tag(self.name, self.key)
        except Exception as exc:
            logger.debug("lease claim %s of %s not deleted: %s", self.key, self.name, exc)

    def _start(self) -> None:
        def renew() -> None:
            while not self._stop.wait(_ttl() / 3):
                try:
                    self._write()
                except Exception as exc:
                    logger.warning("could not renew the lease of %s: %s", self.name, exc)

        self._renewer = threading.Thread(target=renew, name=f"lease-{self.name}", daemon=True)
        self._renewer.start()
