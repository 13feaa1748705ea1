"""Importers: Designer, AutoML and notebook outputs become MLflow models (flavor, signature,
input example, pinned requirements, provenance). Imports nothing from batch or serving."""
