"""The client library upstream apps import: Client (submit, wait, status, feedback), router.

Operations live in producers.ops, the `advisor` CLI in producers.commands, HTTP in
producers.gateway; nothing here imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each name's module, imported on first use: `advisor --help` (producers.cli) and the
# gateway's submodules need none of the client's weight.
_HOMES = {
    **dict.fromkeys(
        ("CallbackRefused", "FeedbackRefused", "InvalidFeedback", "InvalidImage",
         "InvalidWeights", "JobNotFound", "UnknownAdvisor", "UnknownVariant"),
        "jobs.errors",
    ),
    "verify_signature": "notices.webhooks",
    "Client": "producers.client",
    "JobHandle": "producers.client",
    **dict.fromkeys(
        ("InvalidSubmission", "JobFinished", "JobTimeout", "ProducerError", "PublishFailed"),
        "producers.errors",
    ),
    "FeedbackRecord": "producers.feedback",
    "SubmitItem": "producers.inputs",
    "Decision": "producers.router",
    "Router": "producers.router",
    "Services": "producers.services",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


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
