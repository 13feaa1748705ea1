"""Model lifecycle toolkit: workspaces, registry stages, gated promotion across workspaces.

Layers (architecture.md): :mod:`lifecycle.base` (imports nothing above it),
:mod:`lifecycle.registry`, :mod:`lifecycle.monitor`, :mod:`lifecycle.imports`, and the CLI
(:mod:`lifecycle.cli`) on top.
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
