"""Receivers of outcome notices, as upstream apps run them: a webhook endpoint, a Celery worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.support import eventually

WEBHOOK_SECRET = "whsec-test-secret"


def signature_is_valid(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The README's receiver check, written from the scheme alone (not the service's code)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not fields.get("t", "").isdigit() or abs(time.time() - int(fields["t"])) > tolerance:
        return False
    signed = fields["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class Received:
    delivery_id: str
    body: dict[str, Any]
    is_signed: bool


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that can be down (port closed) and come up on the same port."""

    def __init__(self, port: int | None = None, secret: str = WEBHOOK_SECRET) -> None:
        self.port = port or free_port()
        self.secret = secret
        self.received: list[Received] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/advisor/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signed = signature_is_valid(
                    receiver.secret, self.headers.get("X-Advisor-Signature", ""), body
                )
                receiver.received.append(
                    Received(self.headers.get("X-Advisor-Delivery", ""), json.loads(body), signed)
                )
                self.send_response(200 if signed else 400)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def by_job(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        for item in self.received:
            found.setdefault(item.body["job_id"], []).append(item)
        return found


UPSTREAM_APP = '''
"""An upstream app's own Celery worker: it records every completion task it runs."""
import json
import socket
import os

from celery import Celery

app = Celery("upstream", broker=os.environ["UPSTREAM_BROKER"])
app.conf.update(task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False)


@app.task(name="app.critique_done", bind=True)
def critique_done(self, outcome):
    with open(os.environ["UPSTREAM_LOG"], "a") as log:
        log.write(json.dumps({"task_id": self.request.id, "outcome": outcome}) + "\\n")
'''


class UpstreamWorker:
    """`celery -A upstream_app worker -Q QUEUE` in a subprocess, on its own broker."""

    def __init__(
        self, root: Path, broker_url: str, queue: str = "advisor.notify.app.results"
    ) -> None:
        self.root = root
        self.broker_url = broker_url
        self.queue = queue
        self.log = root / "upstream-received.jsonl"
        self.output = root / "upstream-worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> UpstreamWorker:
        (self.root / "upstream_app.py").write_text(textwrap.dedent(UPSTREAM_APP))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(self.root),
               "UPSTREAM_BROKER": self.broker_url, "UPSTREAM_LOG": str(self.log)}  # fmt: skip
        with self.output.open("wb") as out:
            self.proc = proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "upstream_app", "worker", "-Q", self.queue,
                 "--pool=solo", "--without-gossip", "--without-mingle", "-l", "info"],
                cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def ready() -> bool:
            if "ready" in self.output.read_text(errors="replace"):
                return True
            assert proc.poll() is None, self.output.read_text()[-2000:]
            return False

        eventually("the upstream worker to be ready", ready, timeout, poll=0.2)
        return self

    def received(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DripReceiver:
    """Accepts connections and answers one byte every `interval` seconds, forever."""

    def __init__(self, interval: float, phase: str) -> None:
        self.interval, self.phase = interval, phase
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            if self.phase == "headers":
                conn.recv(65536)
                answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10_000
            else:  # never reads the request: the sender's send blocks once buffers fill
                answer = b""
            try:
                for byte in answer or iter(lambda: b"", None):
                    if self.stopped.wait(self.interval):
                        return
                    conn.sendall(bytes([byte]) if isinstance(byte, int) else byte)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
