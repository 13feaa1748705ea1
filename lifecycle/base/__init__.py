"""The base every package leans on: workspaces, model references, errors, tags, atomic
files, digests, fetching a model, the lean (MLflow-free) load and its check against pyfunc,
type maps and metrics.

Nothing here imports :mod:`lifecycle.registry`, :mod:`lifecycle.monitor`,
:mod:`lifecycle.cli`, ``models``, ``batch`` or ``serving`` (an import-linter contract).
"""
