"""Errors of the shared contract; every one derives from AdvisorError."""


class AdvisorError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AdvisorError):
    """A setting or registry entry is invalid; the message names it and the way out."""


class JobNotFound(AdvisorError):
    """No job has the given id."""


class InvalidTransition(AdvisorError):
    """A job state change that its current status forbids."""


class UnknownAdvisor(AdvisorError):
    """The advisor persona is not one the service knows."""


class UnknownVariant(AdvisorError):
    """The variant is not in the registry."""


class InvalidImage(AdvisorError):
    """The image cannot be used: unreadable, corrupt, too large or outside the allowed roots."""


class InvalidWeights(AdvisorError):
    """Rollout weights are malformed: unknown variants, negative, or summing to zero."""


class MigrationScriptsMissing(AdvisorError):
    """The installation has no Alembic scripts where `jobs.migrate` looks for them."""
