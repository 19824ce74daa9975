"""The HTTP gateway (`advisor-gateway`): jobs, events, health, rollouts, report, dashboard."""

from producers.gateway.app import create_app, main

__all__ = ["create_app", "main"]
