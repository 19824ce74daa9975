"""The whole job store behind one name: each lifecycle's methods live in their own module."""

from __future__ import annotations

from store.heartbeats import Heartbeats
from store.lifecycle import Lifecycle
from store.publishing import Publishing
from store.retention import Retention
from store.submissions import Submissions


class Repository(Submissions, Publishing, Lifecycle, Retention, Heartbeats):
    """Job, image and heartbeat persistence over one SQLAlchemy engine."""
