"""Registry operations on top of the base: registering a version, stages and aliases,
gated promotion between workspaces, lineage, and registering an imported model."""
