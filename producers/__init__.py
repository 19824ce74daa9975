"""The client library upstream apps import: Client (submit, wait, status), router, publisher.

Operations live in producers.ops, the `advisor` CLI in producers.commands, HTTP in
producers.gateway; nothing here imports them.
"""

from jobs.errors import (
    CallbackRefused,
    InvalidImage,
    InvalidWeights,
    JobNotFound,
    UnknownAdvisor,
    UnknownVariant,
)
from jobs.webhooks import verify_signature
from producers.client import Client, JobHandle
from producers.errors import (
    InvalidSubmission,
    JobFinished,
    JobTimeout,
    ProducerError,
    PublishFailed,
)
from producers.inputs import SubmitItem
from producers.router import Decision, Router

__all__ = [
    "CallbackRefused",
    "Client",
    "Decision",
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
    "SubmitItem",
    "UnknownAdvisor",
    "UnknownVariant",
    "verify_signature",
]
