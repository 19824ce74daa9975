"""Bounds on what one request may hold: its body (size, read time) and a slot for a stream."""

from __future__ import annotations

import threading

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.gateway.errors import BodyTimeout, BodyTooLarge, InvalidBody, TooBusy
from producers.gateway.problems import problem


class Lease:
    """One taken slot; release() is idempotent, so a stream may release it twice over."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.give_back()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Slots:
    """At most `limit` holders at once; taking never waits (a full house is answered 503)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._lock = threading.Lock()
        self.in_use = 0

    def take(self) -> Lease:
        with self._lock:
            if self.in_use >= self.limit:
                raise TooBusy(
                    f"This gateway already serves {self.limit} {self.what}; retry shortly",
                    limit=self.limit,
                )
            self.in_use += 1
        return Lease(self)

    def give_back(self) -> None:
        with self._lock:
            self.in_use -= 1


class BodyLimit:
    """ASGI middleware: a declared or streamed body over `max_bytes` is answered with 413.

    The body is read up to the limit before the app runs and then replayed to it, so chunked
    uploads without a Content-Length are capped as surely as declared ones.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout  # for the whole body: a slow sender cannot hold a request

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
        with anyio.move_on_after(self.timeout) as deadline:
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
        if deadline.cancelled_caught:
            slow = BodyTimeout(
                f"The request body did not arrive within {self.timeout:g}s "
                "(ADVISOR_GATEWAY_BODY_TIMEOUT_SECONDS)"
            )
            await self._refuse(slow, scope, receive, send, close=True)
            return
        body = b"".join(chunks)
        del chunks
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
        exc: BodyTooLarge | InvalidBody | BodyTimeout,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        close: bool = False,
    ) -> None:
        # close: the rest of a slow body must not be read as the next request.
        headers = {"Connection": "close"} if close else None
        response = problem(exc.status, exc.code, exc.message, headers, **exc.extra)
        await response(scope, receive, send)
