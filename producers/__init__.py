"""The client library upstream apps import: Client (submit, wait, status, feedback), router.

Operations live in producers.ops, the `advisor` CLI in producers.commands, HTTP in
producers.gateway; nothing here imports them.
"""

from jobs.errors import (
    CallbackRefused,
    FeedbackRefused,
    InvalidFeedback,
    InvalidImage,
    InvalidWeights,
    JobNotFound,
    UnknownAdvisor,
    UnknownVariant,
)
from notices.webhooks import verify_signature
from producers.client import Client, JobHandle
from producers.errors import (
    InvalidSubmission,
    JobFinished,
    JobTimeout,
    ProducerError,
    PublishFailed,
)
from producers.feedback import FeedbackRecord
from producers.inputs import SubmitItem
from producers.router import Decision, Router
from producers.services import Services

__all__ = [
    "CallbackRefused",
    "Client",
    "Decision",
    "FeedbackRecord",
    "FeedbackRefused",
    "InvalidFeedback",
    "InvalidImage",
    "InvalidSubmission",
    "InvalidWeights",
    "JobFinished",
    "JobHandle",
    "JobNotFound",
    "JobTimeout",
    "ProducerError",
    "PublishFailed",
    "Router",
    "Services",
    "SubmitItem",
    "UnknownAdvisor",
    "UnknownVariant",
    "verify_signature",
]
