"""Model lifecycle toolkit: workspaces, registry stages, gated promotion across workspaces.

The base modules (:mod:`lifecycle.base.errors`, :mod:`lifecycle.base.workspaces`,
:mod:`lifecycle.base.refs`) import none of ``models``, ``batch`` or ``serving``.
"""

from lifecycle.base.errors import LifecycleError
from lifecycle.base.refs import canonical_stage, parse_model_uri, resolve_model
from lifecycle.base.workspaces import Workspace, load_config

__all__ = [
    "LifecycleError",
    "Workspace",
    "canonical_stage",
    "load_config",
    "parse_model_uri",
    "resolve_model",
]

__version__ = "0.1.0"
