"""The `advisor-gateway` HTTP service: the app factory and its thin main()."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from jobs.errors import AdvisorError, summary
from jobs.settings import Settings, get_settings
from jobs.variants import Registry
from producers.gateway import api, dashboard, ops, plans, problems
from producers.gateway.limits import BodyLimit
from producers.gateway.protocol import ProblemH11Protocol
from producers.gateway.service import Gateway
from producers.services import Services

logger = logging.getLogger(__name__)

DESCRIPTION = """Photo critique jobs over HTTP. `POST /analyze` queues a job (202) or, with
`?wait=SECONDS`, returns the finished analysis (200); follow a job with `GET /jobs/{id}` or
its server-sent events. Errors are `{"error": "<code>", "message": "..."}`."""


def is_loopback(host: str) -> bool:
    """Only this machine can reach a gateway bound to `host`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_local_roots(settings: Settings, host: str | None) -> tuple[Settings, bool]:
    """The embedded default: with no ADVISOR_IMAGE_ROOTS, a loopback gateway reads image
    paths relative to its working directory (while no API key exists, checked per request).

    Returns the settings to serve with and whether their roots are that default.
    """
    if settings.image_roots or host is None or not is_loopback(host):
        return settings, False
    return settings.model_copy(update={"image_roots": [Path.cwd().resolve()]}), True


def create_app(
    settings: Settings | None = None,
    registry: Registry | None = None,
    *,
    host: str | None = None,
) -> FastAPI:
    """The ASGI app over one Services; nothing connects until the first request.

    `host`: the address it is bound to; a loopback one allows paths by default (above).
    """
    settings, local_paths = with_local_roots(settings or get_settings(), host)
    services = Services(settings, registry=registry)
    # The publisher is made now, not lazily by the first concurrent requests; it connects
    # only when used.
    gateway = Gateway.of(services, local_paths=local_paths)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

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


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 1, like every other startup failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port: give 1-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="advisor-gateway",
        description="HTTP gateway: POST /analyze, GET /jobs/{id} (+ /events), /health, "
        "/rollouts, /report, /metrics, /dashboard. Configured by ADVISOR_* variables.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        logging.basicConfig(
            level=settings.log_level, stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )  # fmt: skip
        app = create_app(settings, host=args.host)
        # Bound here, not by uvicorn: a taken port is one line before anything starts.
        listener = bind(args.host, args.port)
    except AdvisorError as exc:
        print(f"advisor-gateway: error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"advisor-gateway: error: {summary(exc, typed=True, limit=300)}", file=sys.stderr)
        return 1
    config = uvicorn.Config(app, host=args.host, port=args.port, **uvicorn_options(settings))
    # uvicorn names its address only for sockets it bound itself.
    shown = f"[{args.host}]" if ":" in args.host else args.host
    logger.info("Listening on http://%s:%d (Ctrl-C stops)", shown, args.port)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


class CannotListen(AdvisorError):
    """The gateway's address cannot be bound."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or CannotListen naming the problem and the way out."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as exc:
        raise CannotListen(
            f"cannot listen on {where}: {host!r} is not an address of this machine "
            f"({exc}); give --host an IP address such as 127.0.0.1 or 0.0.0.0"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            way_out = (
                f"another process listens there (find it: ss -ltnp 'sport = :{port}'); stop it "
                "or choose another --port"
            )
        elif exc.errno == errno.EACCES:
            way_out = "ports below 1024 need root: choose --port 1024 or above"
        else:
            way_out = "give --host an address of this machine and a free --port"
        raise CannotListen(f"cannot listen on {where}: {exc.strerror}; {way_out}") from None
    sock.set_inheritable(True)
    return sock


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
