"""Lineage of a model version: the chain of promotions back to where it was first registered.

Each promotion tags the target version with the source workspace (name and URIs), model,
version and run (see :mod:`lifecycle.registry.promote`). :func:`lineage` follows those tags hop by hop
(prod -> test -> dev -> ...), finding each source workspace in the configuration by its
recorded tracking URI first and its name second, so a renamed workspace is still found; a
workspace missing from the configuration is opened from its recorded URIs.
"""

from __future__ import annotations

import logging
from typing import Any

from lifecycle.base.errors import LifecycleError
from lifecycle.base.refs import get_model_version
from lifecycle.base.tags import DIGEST_TAG
from lifecycle.base.workspaces import Config, Workspace
from lifecycle.registry.promote import (
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
    SOURCE_MODEL_TAG,
    SOURCE_REGISTRY_URI_TAG,
    SOURCE_RUN_TAG,
    SOURCE_TRACKING_URI_TAG,
    SOURCE_VERSION_TAG,
    SOURCE_WORKSPACE_TAG,
)
from lifecycle.registry.stages import current_stage

logger = logging.getLogger(__name__)

MAX_HOPS = 50


def find_workspace(
    config: Config, name: str | None, tracking_uri: str | None, registry_uri: str | None = None
) -> tuple[Workspace | None, str]:
    """The configured workspace a lineage tag points at, and how it was found.

    Returns:
        (workspace, "uri" | "name" | "recorded uri") or (None, reason).
    """
    uri = (tracking_uri or "").rstrip("/")
    if uri:
        by_uri = [w for w in config.workspaces.values() if w.tracking_uri.rstrip("/") == uri]
        if by_uri:
            same_name = [w for w in by_uri if w.name == name]
            return (same_name or by_uri)[0], "uri"
    if name and name in config.workspaces:
        return config.workspaces[name], "name"
    if uri and (uri.startswith(("http://", "https://", "sqlite:", "file:"))):
        return (
            Workspace(
                name=name or uri,
                tracking_uri=uri,
                registry_uri=(registry_uri or uri),
            ),
            "recorded uri",
        )
    return None, f"workspace '{name}' ({tracking_uri}) is not in the configuration"


def lineage(config: Config, ws: Workspace, name: str, version: str | int) -> list[dict[str, Any]]:
    """The chain of ``name`` v``version`` in ``ws`` back to its origin, newest hop first.

    Each entry: ``workspace``, ``tracking_uri``, ``name``, ``version``, ``stage``, ``run_id``,
    ``digest``, ``promoted_at``, ``promoted_by`` (None at the origin) and ``found_by``. A hop
    whose workspace or version can no longer be read ends the chain with ``reachable: False``
    and what the tags recorded.

    Raises:
        ModelNotFoundError: ``name`` v``version`` does not exist in ``ws``.
    """
    chain: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    current: tuple[Workspace, str, str] | None = (ws, name, str(version))
    found_by = "given"
    while current is not None and len(chain) < MAX_HOPS:
        hop_ws, hop_name, hop_version = current
        key = (hop_ws.tracking_uri.rstrip("/"), hop_name, hop_version)
        if key in seen:
            logger.warning("lineage of %s v%s loops at %s", name, version, key)
            break
        seen.add(key)
        try:
            mv = get_model_version(hop_ws, hop_name, hop_version)
            stage = current_stage(hop_ws, hop_name, hop_version)
        except LifecycleError:
            if not chain:
                raise
            chain.append(_unreachable(hop_ws, hop_name, hop_version, found_by, "version not found"))
            break
        except Exception as exc:  # an unreachable server ends the chain, it does not fail it
            if not chain:
                raise
            chain.append(_unreachable(hop_ws, hop_name, hop_version, found_by, str(exc)[:200]))
            break
        tags = dict(mv.tags or {})
        chain.append(
            {
                "workspace": hop_ws.name,
                "tracking_uri": hop_ws.tracking_uri,
                "name": hop_name,
                "version": str(mv.version),
                "stage": stage,
                "run_id": mv.run_id,
                "digest": tags.get(DIGEST_TAG),
                "promoted_at": tags.get(PROMOTED_AT_TAG),
                "promoted_by": tags.get(PROMOTED_BY_TAG),
                "found_by": found_by,
                "reachable": True,
            }
        )
        if SOURCE_VERSION_TAG not in tags:
            break
        src_ws, found_by = find_workspace(
            config,
            tags.get(SOURCE_WORKSPACE_TAG),
            tags.get(SOURCE_TRACKING_URI_TAG),
            tags.get(SOURCE_REGISTRY_URI_TAG),
        )
        src_name = tags.get(SOURCE_MODEL_TAG) or hop_name
        src_version = tags[SOURCE_VERSION_TAG]
        if src_ws is None:
            chain.append(
                {
                    "workspace": tags.get(SOURCE_WORKSPACE_TAG),
                    "tracking_uri": tags.get(SOURCE_TRACKING_URI_TAG),
                    "name": src_name,
                    "version": src_version,
                    "run_id": tags.get(SOURCE_RUN_TAG),
                    "reachable": False,
                    "reason": found_by,
                }
            )
            break
        current = (src_ws, src_name, src_version)
    return chain


def _unreachable(
    ws: Workspace, name: str, version: str, found_by: str, reason: str
) -> dict[str, Any]:
    return {
        "workspace": ws.name,
        "tracking_uri": ws.tracking_uri,
        "name": name,
        "version": version,
        "found_by": found_by,
        "reachable": False,
        "reason": reason,
    }
