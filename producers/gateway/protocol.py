"""HTTP/1.1 errors caught before the application answer like the rest of the API: JSON.

uvicorn's h11 protocol answers a request it cannot parse (a NUL in a header, a broken
request line) with a plain-text 400 before any route or middleware sees it. This protocol
writes the same status with the API's error body, `{"error": ..., "message": ...}`.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

BAD_REQUEST_BODY = json.dumps({
    "error": "bad_request",
    "message": "The HTTP request could not be parsed (malformed request line or headers, "
    "e.g. a control character in a header); send a well-formed HTTP/1.1 request",
}).encode()  # fmt: skip


class ProblemH11Protocol(H11Protocol):
    """H11Protocol whose pre-application 400 carries the API's JSON error body."""

    def send_400_response(self, msg: str) -> None:
        # `msg` is h11's parser detail: kept out of the answer, as every other error's is.
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BAD_REQUEST_BODY)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(
            self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
        )
        self.transport.write(self.conn.send(h11.Data(data=BAD_REQUEST_BODY)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
