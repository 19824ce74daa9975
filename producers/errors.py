"""Errors of the producer side; every one derives from ProducerError (an AdvisorError)."""

from __future__ import annotations

from jobs.errors import AdvisorError


class ProducerError(AdvisorError):
    """Root of every error the producer side raises on purpose."""


class UsageError(ProducerError):
    """A command line that names no valid command, option or argument combination."""


class InvalidSubmission(ProducerError):
    """A submit argument other than the image or advisor is unusable (subject, key, item)."""


class PublishFailed(ProducerError):
    """The broker did not take the message; the job row stays queued for the republisher."""

    incident_kind = "broker"  # what a client reads of it: jobs/incidents.py


class JobTimeout(ProducerError, TimeoutError):
    """A job did not finish within the wait; it keeps running and can be waited on again."""

    def __init__(self, job_id: str, status: str, timeout: float) -> None:
        super().__init__(
            f"Job {job_id} is still {status} after {timeout:g}s; "
            f"wait again with `advisor wait {job_id}`"
        )
        self.job_id = job_id
        self.status = status
        self.timeout = timeout


class JobFinished(ProducerError):
    """A cancel came too late: the job already succeeded, failed or was cancelled."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"Job {job_id} already {status}; there is nothing to cancel")
        self.job_id = job_id
        self.status = status


class StatisticsError(ProducerError):
    """Data a statistical test cannot be computed on; reported as such, never as a p-value."""


class NonFiniteValue(StatisticsError):
    """An observation is NaN or infinite."""


class NotBinary(StatisticsError):
    """A rate's outcome is neither 0 nor 1."""


class InvalidPlan(ProducerError):
    """A rollout plan's input is unusable: unknown variant, steps not increasing in (0, 100]."""


class PlanNotFound(InvalidPlan):
    """The advisor has no plan (or no open one, for pause, resume and abort)."""


class PlanConflict(InvalidPlan):
    """A second open plan for one advisor, or a plan that changed meanwhile; nothing written."""


class InvalidBenchFile(ProducerError):
    """A saved `advisor-worker bench` file is missing, unreadable, or not for this variant."""
