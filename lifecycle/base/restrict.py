"""Restricted versions: a version flagged unfit (``needs_retraining`` by a monitor policy, or
restricted by a release policy for drift, staleness or being archived) is refused by the
commands that put it in front of customers (serve, score, deploy) unless the user overrides
it with ``--allow-restricted`` (carried to child processes in ``$LIFECYCLE_ALLOW_RESTRICTED``),
and every override is an audit event. Monitoring, gates and baselines still load it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from lifecycle.base.errors import RestrictedVersionError
from lifecycle.base.tags import NEEDS_RETRAINING_REASON_TAG, NEEDS_RETRAINING_TAG, RESTRICTED_TAG
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

#: Set to ``1`` by ``--allow-restricted``.
ALLOW_RESTRICTED_VAR = "LIFECYCLE_ALLOW_RESTRICTED"


def restriction(tags: Mapping[str, str] | None) -> str | None:
    """Why a version with these tags is restricted, or None."""
    tags = tags or {}
    if str(tags.get(NEEDS_RETRAINING_TAG, "")).lower() == "true":
        why = tags.get(NEEDS_RETRAINING_REASON_TAG)
        return "it is flagged needs_retraining" + (f" ({why})" if why else "")
    raw = tags.get(RESTRICTED_TAG)
    if raw:
        try:
            return str(json.loads(raw).get("reason") or raw)
        except (ValueError, AttributeError):
            return str(raw)
    return None


def require_unrestricted(
    ws: Workspace,
    name: str,
    version: str,
    tags: Mapping[str, str] | None,
    *,
    action: str,
    allow: bool | None = None,
) -> None:
    """Refuse to ``action`` (serve, score, deploy) a restricted version unless ``allow``
    (None: ``$LIFECYCLE_ALLOW_RESTRICTED``); an allowed one is recorded in the audit.

    Raises:
        RestrictedVersionError: one line naming the version, the reason and the override.
    """
    reason = restriction(tags)
    if reason is None:
        return
    if allow is None:
        allow = os.environ.get(ALLOW_RESTRICTED_VAR, "") == "1"
    if not allow:
        raise RestrictedVersionError(
            f"Refusing to {action} version {version} of '{name}' in workspace '{ws.name}': "
            f"{reason}; pass --allow-restricted to override (recorded in the audit)"
        )
    from lifecycle.base.audit import record_event

    logger.warning(
        "%s v%s is restricted (%s); allowed by --allow-restricted", name, version, reason
    )
    record_event(
        ws, name, "allow-restricted", version=version, details={"reason": reason, "command": action}
    )
