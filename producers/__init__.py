"""Producer side: the client library, the router, rollout control and the `advisor` CLI."""

from jobs.errors import InvalidImage, InvalidWeights, JobNotFound, UnknownAdvisor, UnknownVariant
from producers.client import Client, JobHandle
from producers.errors import (
    InvalidSubmission,
    JobTimeout,
    ProducerError,
    PublishFailed,
)
from producers.inputs import SubmitItem
from producers.router import Decision, Router

__all__ = [
    "Client",
    "Decision",
    "InvalidImage",
    "InvalidSubmission",
    "InvalidWeights",
    "JobHandle",
    "JobNotFound",
    "JobTimeout",
    "ProducerError",
    "PublishFailed",
    "Router",
    "SubmitItem",
    "UnknownAdvisor",
    "UnknownVariant",
]
