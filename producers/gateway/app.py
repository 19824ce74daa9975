"""The `advisor-gateway` HTTP service: the app factory and its thin main()."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from jobs.errors import AdvisorError, summary
from jobs.settings import Settings, get_settings
from jobs.variants import Registry
from producers.client import Client
from producers.gateway import api, dashboard, ops, plans, problems
from producers.gateway.limits import BodyLimit
from producers.gateway.protocol import ProblemH11Protocol
from producers.gateway.service import Gateway

logger = logging.getLogger(__name__)

DESCRIPTION = """Photo critique jobs over HTTP. `POST /analyze` queues a job (202) or, with
`?wait=SECONDS`, returns the finished analysis (200); follow a job with `GET /jobs/{id}` or
its server-sent events. Errors are `{"error": "<code>", "message": "..."}`."""


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    """The ASGI app over one Client; nothing connects until the first request."""
    settings = settings or get_settings()
    client = Client(settings, registry=registry)
    # The publisher is made now, not lazily by the first concurrent requests; it connects
    # only when used.
    gateway = Gateway.of(client)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()

    # /docs from the vendored Swagger UI: FastAPI's default page loads it from a CDN.
    app = FastAPI(
        title="mondrian-advisor gateway", version="1", description=DESCRIPTION,
        lifespan=lifespan, docs_url=None, redoc_url=None,
    )  # fmt: skip

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="mondrian-advisor gateway",
            swagger_js_url="/static/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui.css", swagger_favicon_url="",
        )  # fmt: skip

    app.state.gateway = gateway
    problems.install(app)
    app.add_middleware(
        BodyLimit, max_bytes=settings.gateway_max_body_bytes,
        timeout=settings.gateway_body_timeout_seconds,
    )  # fmt: skip
    app.include_router(api.router)
    app.include_router(ops.router)
    app.include_router(plans.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advisor-gateway",
        description="HTTP gateway: POST /analyze, GET /jobs/{id} (+ /events), /health, "
        "/rollouts, /report, /metrics, /dashboard. Configured by ADVISOR_* variables.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        logging.basicConfig(
            level=settings.log_level, stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )  # fmt: skip
        app = create_app(settings)
    except AdvisorError as exc:
        print(f"advisor-gateway: error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"advisor-gateway: error: {summary(exc, typed=True, limit=300)}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(settings))
    return 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Connections at once (503 beyond) and idle keep-alive: a flood cannot hold the server."""
    return {
        "log_level": settings.log_level.lower(),
        "limit_concurrency": settings.gateway_limit_concurrency,
        "timeout_keep_alive": settings.gateway_keep_alive_seconds,
        # Headers of one request at most 64 KiB (h11): no unbounded header buffering.
        "h11_max_incomplete_event_size": 64 * 1024,
        # A request h11 cannot parse is answered with the API's JSON error body.
        "http": ProblemH11Protocol,
    }


if __name__ == "__main__":
    sys.exit(main())
