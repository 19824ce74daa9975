"""`advisor metrics serve`: a standalone Prometheus exporter, for hosts that run no gateway."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from celery import Celery
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from jobs.broker import queue_depths
from jobs.contracts import queue_for
from jobs.errors import BrokerUnreachable, summary
from jobs.settings import mask_url
from producers.commands.output import Subparsers, services
from producers.ops.metrics import render_metrics
from producers.services import Services

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9808
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Exporter:
    """Reads the database and the broker on every scrape; nothing is cached between scrapes."""

    def __init__(self, built: Services) -> None:
        self.services = built
        self.settings = built.settings
        self.engine: Engine = built.engine
        self.app: Celery = built.broker
        self.variants: Iterable[str] = built.registry.names

    def scrape(self) -> bytes:
        try:
            depths = queue_depths(self.app, [queue_for(variant) for variant in self.variants])
        except BrokerUnreachable as exc:
            # Depths the broker did not tell are left out, not reported as 0.
            logger.warning("Metrics scrape without queue depths: %s", exc)
            depths = {}
        return render_metrics(self.engine, self.settings, depths)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO") not in ("/", "/metrics"):
            return _reply(start_response, "404 Not Found", b"Only /metrics is served here.\n")
        try:
            body = self.scrape()
        except SQLAlchemyError as exc:
            reason = summary(exc, limit=300)
            logger.warning("Metrics scrape failed: database error: %s", reason)
            return _reply(start_response, "503 Service Unavailable", f"{reason}\n".encode())
        return _reply(start_response, "200 OK", body, CONTENT_TYPE_LATEST)

    def close(self) -> None:
        self.services.close()
        self.engine.dispose()


def _reply(
    start_response: StartResponse, status: str, body: bytes, kind: str = "text/plain"
) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        logger.debug("%s " + format, self.address_string(), *args)


def cmd_serve(args: argparse.Namespace) -> int:
    built = services()
    settings = built.settings
    exporter = Exporter(built)
    try:
        server = make_server(args.host, args.port, exporter, handler_class=_QuietHandler)
    except OSError as exc:
        exporter.close()
        print(f"advisor: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"Serving Prometheus metrics on http://{args.host}:{server.server_port}/metrics "
        f"(database {mask_url(settings.resolved_database_url)}, "
        f"broker {mask_url(settings.resolved_broker_url)})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        exporter.close()
    return 0


def register(sub: Subparsers) -> None:
    metrics = sub.add_parser("metrics", help="Prometheus metrics without the gateway")
    actions = metrics.add_subparsers(dest="metrics_command", required=True, metavar="ACTION")
    serve_parser = actions.add_parser(
        "serve", help="serve /metrics: queue depths, jobs by status and variant, inference time"
    )
    serve_parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve_parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    serve_parser.set_defaults(handler=cmd_serve)
