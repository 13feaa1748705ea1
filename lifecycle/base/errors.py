"""The one error family of the toolkit.

Every error the library raises on purpose is a :class:`LifecycleError`. Each carries the
process exit code the CLI uses and an MLflow-style error code, so the CLI can turn it into
one line on stderr without a traceback, and a server can map it to an HTTP status.
"""

from __future__ import annotations


class LifecycleError(Exception):
    """Base of every error raised by the toolkit on purpose.

    Args:
        message: one line that names the bad value and what was expected.
    """

    exit_code: int = 1
    error_code: str = "INTERNAL_ERROR"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(LifecycleError):
    """A configuration file or value is invalid."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class WorkspaceError(LifecycleError):
    """A workspace is unknown or cannot be reached."""

    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404


class InvalidArgumentError(LifecycleError):
    """A parameter has a value outside what is allowed."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class InvalidStageError(InvalidArgumentError):
    """A registry stage name is not one of the allowed stages."""


class ModelNotFoundError(LifecycleError):
    """A registered model, version, stage or alias does not exist in a workspace."""

    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404


class ModelImportError(LifecycleError):
    """An origin artifact (Designer, AutoML, notebook) cannot be imported."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class UntrustedPickleError(ModelImportError):
    """A pickle would have to be loaded without the user's consent."""


class SchemaError(LifecycleError):
    """Input data does not match a model's signature."""

    error_code = "BAD_REQUEST"
    http_status = 400


class GateFailedError(LifecycleError):
    """A promotion gate failed; the target workspace was left untouched."""

    error_code = "INVALID_STATE"
    http_status = 409

    def __init__(self, message: str, results: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.results = results or []


class PromotionError(LifecycleError):
    """A promotion failed after the gates; whatever it created was rolled back."""

    error_code = "INTERNAL_ERROR"


class ScoringError(LifecycleError):
    """A batch scoring run failed (bad input beyond the allowed error rate, I/O)."""

    error_code = "BAD_REQUEST"
    http_status = 400


class RestrictedVersionError(LifecycleError):
    """A version is restricted (needs retraining, stale, drifted...) and no override was given."""

    error_code = "INVALID_STATE"
    http_status = 409


class ServingError(LifecycleError):
    """The scoring server cannot start or serve the model."""


class RegistryBusyError(LifecycleError):
    """Another command holds the lock of a registered model for too long."""

    error_code = "RESOURCE_CONFLICT"
    http_status = 409


class ModelEnvError(LifecycleError):
    """A model's own environment cannot be built, or its worker process failed."""

    error_code = "INTERNAL_ERROR"
    http_status = 503


class DeploymentError(LifecycleError):
    """A deployment spec cannot be built or applied."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class PackagingError(LifecycleError):
    """A build context or image cannot be made (``lifecycle package``)."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class MonitoringError(LifecycleError):
    """Monitoring cannot compare data with a model's baseline."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class InsufficientDataError(LifecycleError):
    """Monitoring had too few rows to judge any column; schedulers see exit code 4."""

    exit_code = 4
    error_code = "INVALID_STATE"
    http_status = 409


class DriftDetectedError(LifecycleError):
    """A monitoring policy threshold was crossed; schedulers act on exit code 3."""

    exit_code = 3
    error_code = "INVALID_STATE"
    http_status = 409
