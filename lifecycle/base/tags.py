"""Every tag key the toolkit writes on runs, registered models and versions.

The registry is the toolkit's database: these keys are its schema, readable with MLflow
alone. Change one only with a migration; add new ones here, never as string literals.
"""

from __future__ import annotations

PREFIX = "lifecycle."

# ---- a version's content and state
#: sha256 over the model files (:func:`lifecycle.base.digest.model_digest`).
DIGEST_TAG = "lifecycle.content_digest"
#: The registered model a run's model was registered as.
REGISTERED_MODEL_TAG = "lifecycle.registered_model"
#: The stage a version was last moved to (kept where the registry has no stages).
STAGE_TAG = "lifecycle.stage"
#: ``true`` on a version left behind by a failed copy: never reused, never served.
FAILED_TAG = "lifecycle.failed"
#: The last audit action on a version: ``<action> <timestamp>``.
LAST_EVENT_TAG = "lifecycle.last_event"

# ---- provenance of an import (run and version)
ORIGIN_KIND_TAG = "lifecycle.origin.kind"
ORIGIN_FORMAT_TAG = "lifecycle.origin.format"
SOURCE_NAME_TAG = "lifecycle.source_name"
SOURCE_SHA_TAG = "lifecycle.source_sha256"
IMPORTED_BY_TAG = "lifecycle.imported_by"
ESTIMATOR_TAG = "lifecycle.estimator"
DESIGNER_LEARNER_TAG = "lifecycle.designer.learner"
DESIGNER_ESTIMATOR_TAG = "lifecycle.designer.estimator"
DESIGNER_TASK_TAG = "lifecycle.designer.task"
AUTOML_MODEL_SHA_TAG = "lifecycle.automl.model_pkl_sha256"
AUTOML_SCORING_FILE_TAG = "lifecycle.automl.scoring_file"
#: The run that trained an imported model (``import --run-id``): its metrics are carried.
TRAINING_RUN_TAG = "lifecycle.training_run_id"
#: Where a version's plain-named metrics come from: ``holdout FILE`` or ``training run ID``.
REFERENCE_METRICS_TAG = "lifecycle.reference_metrics"

# ---- lineage of a promoted version (target version and run)
SOURCE_WORKSPACE_TAG = "lifecycle.source.workspace"
SOURCE_TRACKING_URI_TAG = "lifecycle.source.tracking_uri"
SOURCE_REGISTRY_URI_TAG = "lifecycle.source.registry_uri"
SOURCE_MODEL_TAG = "lifecycle.source.model"
SOURCE_VERSION_TAG = "lifecycle.source.version"
SOURCE_RUN_TAG = "lifecycle.source.run_id"
PROMOTED_AT_TAG = "lifecycle.promoted_at"
PROMOTED_BY_TAG = "lifecycle.promoted_by"
LINEAGE_TAGS = (
    SOURCE_WORKSPACE_TAG,
    SOURCE_TRACKING_URI_TAG,
    SOURCE_REGISTRY_URI_TAG,
    SOURCE_MODEL_TAG,
    SOURCE_VERSION_TAG,
    SOURCE_RUN_TAG,
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
)

# ---- registry trust (issue #15)
#: Registered-model tag ``lifecycle.lease.<token>``: one command's claim on the model's lease
#: (remote registries, where a file lock cannot reach the other runners).
LEASE_TAG_PREFIX = "lifecycle.lease."
#: Registered-model tag ``lifecycle.journal.<promotion id>``: an unfinished promotion's intent
#: record and the steps it completed (deleted when the promotion finishes or is undone).
JOURNAL_TAG_PREFIX = "lifecycle.journal."
#: On the run and the version a promotion creates: which promotion created them.
PROMOTION_ID_TAG = "lifecycle.promotion_id"

# ---- consent (issue #16)
#: Version tag: the user's consent to unpickle the version's files (JSON: by, at, how).
PICKLE_CONSENT_TAG = "lifecycle.pickle_consent"

# ---- release automation (issue #17)
#: Registered-model tag ``lifecycle.release.slot.<job>``: the last schedule slot claimed by
#: the release controller for that job (UTC, ISO).
RELEASE_SLOT_TAG_PREFIX = "lifecycle.release.slot."
#: Version tag: why a release policy restricts the version (JSON: reason, release digest);
#: serve, score and deploy refuse it without --allow-restricted.
RESTRICTED_TAG = "lifecycle.restricted"

# ---- audit and deployments (registered-model and version tags)
#: Registered-model tag ``lifecycle.audit.<UTC timestamp>.<random>``: one JSON event.
AUDIT_TAG_PREFIX = "lifecycle.audit."
#: Version tag ``lifecycle.deployment.<kind>.<target>``: where the version runs.
DEPLOYMENT_TAG_PREFIX = "lifecycle.deployment."

# ---- monitoring
#: The baseline profile's artifact path on a version's run.
BASELINE_TAG = "lifecycle.baseline"
MONITOR_MODEL_TAG = "lifecycle.monitor.model"
MONITOR_VERSION_TAG = "lifecycle.monitor.version"
MONITOR_DRIFT_TAG = "lifecycle.monitor.drift"
MONITOR_LAST_TAG = "lifecycle.monitor.last"
MONITOR_MODEL_URI_TAG = "lifecycle.monitor.model_uri"
MONITOR_WORKSPACE_TAG = "lifecycle.monitor.workspace"
#: Set to ``true`` by a monitor policy; deliberately without the prefix (users filter on it).
NEEDS_RETRAINING_TAG = "needs_retraining"
NEEDS_RETRAINING_REASON_TAG = "lifecycle.needs_retraining.reason"

# ---- runs the toolkit records (batch scoring, Azure specs)
RUN_KIND_TAG = "lifecycle.kind"
MODEL_URI_TAG = "lifecycle.model_uri"
ENGINE_TAG = "lifecycle.engine"
MODEL_NAME_TAG = "lifecycle.model_name"
MODEL_VERSION_TAG = "lifecycle.model_version"
SOURCE_WORKSPACE_NAME_TAG = "lifecycle.source_workspace"
