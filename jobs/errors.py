"""Errors of the shared contract; every one derives from AdvisorError."""


class AdvisorError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AdvisorError):
    """A setting or registry entry is invalid; the message names it and the way out."""


class JobNotFound(AdvisorError):
    """No job has the given id."""


class AmbiguousJobId(JobNotFound):
    """A job id prefix that more than one job's id starts with."""


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


class IdempotencyConflict(AdvisorError):
    """An idempotency key already names a different request; nothing was written."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class QuotaExceeded(AdvisorError):
    """An API key already has its quota of jobs queued or running; nothing was written."""

    def __init__(self, message: str, *, in_flight: int, limit: int) -> None:
        super().__init__(message)
        self.in_flight = in_flight
        self.limit = limit


class KeyProblem(AdvisorError):
    """An API key command names no key, a key that exists already, or an unusable name."""


class InvalidWeights(AdvisorError):
    """Rollout weights are malformed: unknown variants, negative, or summing to zero."""


class InvalidFeedback(AdvisorError):
    """A feedback value is out of range (rating 1-5, comment length, source)."""


class FeedbackRefused(AdvisorError):
    """The job cannot take feedback: not finished, failed, or a shadow job."""


class StaleVersion(InvalidWeights):
    """A rollout change named a version that is no longer current; nothing was written."""

    def __init__(self, message: str, *, advisor: str, expected: int, current: int) -> None:
        super().__init__(message)
        self.advisor = advisor
        self.expected = expected
        self.current = current


class MigrationScriptsMissing(AdvisorError):
    """The installation has no Alembic scripts where `store.migrate` looks for them."""


class BrokerUnreachable(AdvisorError):
    """The broker did not answer; the message names it (password masked) and the cause."""

    incident_kind = "broker"  # what a client reads of it: jobs/incidents.py


class CallbackRefused(AdvisorError):
    """A callback URL may not be called: not allowed, not resolvable, or a non-public address."""


def summary(exc: BaseException, *, typed: bool = False, limit: int | None = None) -> str:
    """`exc` in one line, for stderr, a log line or an HTTP answer.

    A wrapper that carries the driver's exception as `orig` (SQLAlchemy's DBAPIError, whose
    own text adds the SQL and its parameters) speaks through it. All whitespace, newlines
    included, becomes single spaces; an empty message gives the type's name. `typed` puts
    the type's name in front; `limit` cuts the text to that many characters.
    """
    orig = getattr(exc, "orig", None)
    inner = orig if isinstance(orig, BaseException) else exc
    text = " ".join(str(inner).split("\n[SQL: ")[0].split()) or type(inner).__name__
    if limit is not None:
        text = text[:limit]
    return f"{type(inner).__name__}: {text}" if typed else text
