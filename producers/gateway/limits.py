"""A cap on request bodies, enforced on the raw byte stream before anything parses it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.gateway.errors import BodyTooLarge, InvalidBody
from producers.gateway.problems import problem


class BodyLimit:
    """ASGI middleware: a declared or streamed body over `max_bytes` is answered with 413.

    The body is read up to the limit before the app runs and then replayed to it, so chunked
    uploads without a Content-Length are capped as surely as declared ones.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(
                    InvalidBody(f"Content-Length {declared!r} is not a number"),
                    scope,
                    receive,
                    send,
                )
                return
            if int(declared) > self.max_bytes:
                await self._refuse(self._too_large(int(declared)), scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(self._too_large(None), scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                # Afterwards only a disconnect can arrive (streaming responses listen for it).
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, declared: int | None) -> BodyTooLarge:
        what = f"A body of {declared} bytes" if declared is not None else "The request body"
        return BodyTooLarge(
            f"{what} exceeds the {self.max_bytes}-byte limit (ADVISOR_GATEWAY_MAX_BODY_BYTES)",
            limit=self.max_bytes,
        )

    @staticmethod
    async def _refuse(
        exc: BodyTooLarge | InvalidBody, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = problem(exc.status, exc.code, exc.message, **exc.extra)
        await response(scope, receive, send)
