"""Requests the HTTP parser refuses answer JSON like every other error, not plain text."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from jobs.settings import Settings
from store import migrate
from tests.producers.gateway.conftest import TOKEN, ThreadGateway, write_registry

MALFORMED = {
    "a NUL in a header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "a NUL in the path": b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "a header without a colon": b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "a space before the colon": b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    "a broken request line": b"GET\r\n\r\n",
    "no Host header": b"GET /health HTTP/1.1\r\n\r\n",
    "two Content-Lengths": b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "a bad chunk size": b"POST /analyze HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nzz\r\n",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> ThreadGateway:
    root: Path = tmp_path_factory.mktemp("protocol")
    (root / "adapter").mkdir()
    write_registry(root, root / "adapter")
    database = f"sqlite:///{root / 'advisor.db'}"
    migrate.upgrade(database)
    settings = Settings(
        data_dir=root / "data", database_url=database,
        registry=root / "adapters" / "registry.json", gateway_token=TOKEN,
    )  # type: ignore[arg-type]  # fmt: skip
    with ThreadGateway(settings) as running:
        yield running  # type: ignore[misc]


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_request_the_parser_refuses_is_a_json_400(gateway: ThreadGateway, name: str) -> None:
    answer = raw_exchange(gateway.port, MALFORMED[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"content-type: application/json" in head.lower()
    problem = json.loads(body)
    assert problem["error"] == "bad_request" and "HTTP" in problem["message"]
    assert b"h11" not in body and b"Traceback" not in body
