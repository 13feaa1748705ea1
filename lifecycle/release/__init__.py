"""Release automation: a declarative policy (``release.yaml``), its plan and apply, approvals,
and the scheduled jobs the controller runs (issue #17)."""
