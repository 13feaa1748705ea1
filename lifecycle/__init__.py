"""Model lifecycle toolkit: workspaces, registry stages, gated promotion across workspaces.

The base modules (:mod:`lifecycle.errors`, :mod:`lifecycle.workspaces`,
:mod:`lifecycle.uris`) import none of ``models``, ``batch`` or ``serving``.
"""

from lifecycle.errors import LifecycleError
from lifecycle.uris import canonical_stage, parse_model_uri, resolve_model
from lifecycle.workspaces import Workspace, load_config

__all__ = [
    "LifecycleError",
    "Workspace",
    "canonical_stage",
    "load_config",
    "parse_model_uri",
    "resolve_model",
]

__version__ = "0.1.0"
