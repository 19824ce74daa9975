"""The producer side's collaborators, built once per process and handed to whoever needs them.

The client, the gateway and the commands take their pieces from one `Services` (httpx style:
dependencies passed in), so they share one engine, one router and one broker connection pool,
and none of them reaches through another for a piece.
"""

from __future__ import annotations

import os
import socket
from functools import cached_property
from types import TracebackType

from celery import Celery
from sqlalchemy import Engine

from jobs.settings import Settings, get_settings
from jobs.variants import Registry, load_registry_for
from notices.courier import Courier, policy_of
from notices.webhooks import CallbackPolicy
from producers.feedback import FeedbackStore
from producers.keys import KeyStore
from producers.outbox import Outbox
from producers.publisher import Publisher
from producers.rollouts import RolloutStore
from producers.router import Router
from store.db import engine_for
from store.deliveries import DeliveryStore
from store.repository import Repository

# Who sent a notice, as its attempt log shows it.
PRODUCER_SENDER = f"producer {socket.gethostname()}:{os.getpid()}"


class Services:
    """Each piece is made on first use: `advisor status` opens no broker connection and
    loads no registry; `close()` releases what was made."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        callback_policy: CallbackPolicy | None = None,
        sender: str = PRODUCER_SENDER,
    ) -> None:
        self.settings = settings or get_settings()
        if registry is not None:
            self.registry = registry
        if callback_policy is not None:
            self.callback_policy = callback_policy
        self.sender = sender

    @cached_property
    def registry(self) -> Registry:
        return load_registry_for(self.settings)

    @cached_property
    def callback_policy(self) -> CallbackPolicy:
        return policy_of(self.settings)

    @cached_property
    def engine(self) -> Engine:
        return engine_for(self.settings.resolved_database_url)

    @cached_property
    def repository(self) -> Repository:
        return Repository(self.engine)

    @cached_property
    def deliveries(self) -> DeliveryStore:
        return DeliveryStore(self.engine)

    @cached_property
    def rollouts(self) -> RolloutStore:
        return RolloutStore(self.engine)

    @cached_property
    def feedback(self) -> FeedbackStore:
        return FeedbackStore(self.engine)

    @cached_property
    def keys(self) -> KeyStore:
        return KeyStore(self.engine)

    @cached_property
    def router(self) -> Router:
        return Router(self.settings, self.registry, self.rollouts, self.repository)

    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(self.settings)

    @cached_property
    def outbox(self) -> Outbox:
        """The one way a job's message goes out: sent, and the outcome recorded on its row."""
        return Outbox(self.repository, self.publisher)

    @property
    def broker(self) -> Celery:
        """The publisher's Celery app, for queue depths; no second app or connection pool."""
        return self.publisher.app

    @cached_property
    def courier(self) -> Courier:
        """Sends due outcome notices (the sweep's step; `advisor deliveries retry`)."""
        return Courier(self.settings, self.deliveries, sender=self.sender)

    def close(self) -> None:
        """Closes the broker pools this made; the engine's pool closes with the process."""
        made = vars(self)
        if "courier" in made:
            self.courier.close()
            del self.courier
        if "publisher" in made:
            self.publisher.close()
            del self.publisher
            made.pop("outbox", None)

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
