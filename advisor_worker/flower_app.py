"""Flower's Celery app: the workers' app and settings, with no cap on broker connections.

Flower sends its inspect and enable-events broadcasts from several threads at once, and each
holds two pooled connections while it publishes; with a bounded pool (`broker_pool_limit`) they
wait on each other forever and Flower never captures an event. Unpooled connections cannot.
"""

from __future__ import annotations

from advisor_worker.celery_app import app

app.conf.broker_pool_limit = None

__all__ = ["app"]
