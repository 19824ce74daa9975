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


class UnsupportedFormat(InvalidImage):
    """The file's signature names a format the service refuses; no decoder has opened it."""

    def __init__(self, message: str, *, detected: str, accepted: tuple[str, ...]) -> None:
        super().__init__(message)
        self.detected = detected
        self.accepted = accepted


class InvalidWeights(AdvisorError):
    """Rollout weights are malformed: unknown variants, negative, or summing to zero."""
