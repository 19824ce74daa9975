"""Webhooks: which callback URLs may be called, Stripe-style signatures, and one pinned POST.

The same policy is asked when a job is submitted and again right before connecting: the
host is resolved, every address checked, and the connection made to a checked address, so
a name that turns private later (DNS rebinding) is refused instead of followed. Redirects
are never followed and the response body is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from jobs.errors import CallbackRefused, summary
from jobs.incidents import IncidentKind, incident
from notices.addresses import IPAddress, non_public_reason

SIGNATURE_HEADER = "X-Advisor-Signature"
DELIVERY_HEADER = "X-Advisor-Delivery"
USER_AGENT = "mondrian-advisor-webhook/1"
MAX_URL_LENGTH = 2048
# Receivers should reject signatures older than this (README); `verify_signature` does.
SIGNATURE_TOLERANCE_SECONDS = 300

# (host, port) -> the addresses it resolves to; injectable so tests can play DNS.
Resolver = Callable[[str, int], Sequence[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    scheme: str
    host: str  # lowercase, no trailing dot, no brackets
    port: int
    path: str  # path and query, as the request line sends them


@dataclass(frozen=True)
class CallbackPolicy:
    """ADVISOR_WEBHOOK_ALLOWED_HOSTS applied: none listed refuses every callback.

    An entry is a host name or address (allowed by name: it may resolve to a loopback,
    private or link-local address), `*.example.com` (its subdomains) or `*` (any host);
    hosts matched only by a wildcard must resolve to public addresses alone.
    """

    allowed_hosts: tuple[str, ...]
    resolver: Resolver = resolve

    def parse(self, url: str) -> CallbackTarget:
        if len(url) > MAX_URL_LENGTH:
            raise CallbackRefused(f"callback_url is {len(url)} characters; the limit is 2048")
        if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
            raise CallbackRefused("callback_url contains spaces or control characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise CallbackRefused(f"callback_url {url[:100]!r}: use http:// or https://")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused("callback_url may not carry credentials (user:password@)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise CallbackRefused(f"callback_url {url[:100]!r}: {exc}") from exc
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise CallbackRefused(f"callback_url {url[:100]!r} names no host")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return CallbackTarget(url, parts.scheme, host, port, path)

    def is_named(self, host: str) -> bool:
        return host in self.allowed_hosts

    def is_listed(self, host: str) -> bool:
        for entry in self.allowed_hosts:
            if entry == "*" or entry == host:
                return True
            if entry.startswith("*.") and host.endswith(entry[1:]):
                return True
        return False

    def check(self, url: str) -> CallbackTarget:
        """The target once its host is listed and resolves to allowed addresses only."""
        target = self.parse(url)
        self.addresses(target)
        return target

    def addresses(self, target: CallbackTarget) -> list[IPAddress]:
        """Resolve now and check every address; raises CallbackRefused naming the reason."""
        if not self.allowed_hosts:
            raise CallbackRefused(
                "Webhooks are off: no host is allowed; list callback hosts in "
                "ADVISOR_WEBHOOK_ALLOWED_HOSTS"
            )
        host = target.host
        if not self.is_listed(host):
            raise CallbackRefused(f"Callback host {host!r} is not in ADVISOR_WEBHOOK_ALLOWED_HOSTS")
        try:
            found = [
                ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, target.port)
            ]
        except (OSError, UnicodeError, ValueError) as exc:
            raise CallbackRefused(
                f"Callback host {host!r} does not resolve ({summary(exc)})"
            ) from exc
        if not found:
            raise CallbackRefused(f"Callback host {host!r} resolves to no address")
        if not self.is_named(host):
            refused = [(a, non_public_reason(a)) for a in found]
            refused = [(a, why) for a, why in refused if why is not None]
            if refused:
                address, why = refused[0]
                raise CallbackRefused(
                    f"Callback host {host!r} resolves to a non-public address ({address}): "
                    f"{why}; non-public addresses are refused unless the host is listed by "
                    "name in ADVISOR_WEBHOOK_ALLOWED_HOSTS"
                )
        return found


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`, Stripe's scheme."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """A receiver's check: a v1 signature matches and its timestamp is recent."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in fields if key.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(
        key.strip() == "v1" and hmac.compare_digest(value, expected) for key, value in fields
    )


@dataclass(frozen=True)
class PostResult:
    """One POST's outcome; `permanent` failures are not retried (a refusal, a redirect).
    `error` is what the tenant may read; `detail` the operator's fuller reason, if any."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False
    detail: str | None = None


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to one checked address while the Host header keeps the URL's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        # The certificate is checked against the URL's host, not the address.
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


class WebhookSender:
    """Signs and POSTs one body to a callback URL under the policy, with short time-outs."""

    def __init__(
        self,
        policy: CallbackPolicy,
        secret: bytes | None,
        *,
        timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.secret = secret
        self.timeout = timeout
        self.tls = tls or ssl.create_default_context()

    def post(self, url: str, body: bytes, delivery_id: str) -> PostResult:
        if not self.secret:
            return PostResult(False, error="ADVISOR_WEBHOOK_SECRET is not set", permanent=True)
        try:
            target = self.policy.parse(url)
            addresses = self.policy.addresses(target)
        except CallbackRefused as exc:
            return PostResult(False, error=str(exc), permanent=True)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            DELIVERY_HEADER: delivery_id,
            "Connection": "close",
        }
        # One deadline for the whole attempt: a socket time-out bounds each read only, and a
        # receiver dripping a byte at a time would hold the attempt for as long as it likes.
        deadline = time.monotonic() + self.timeout
        failed = PostResult(False, error="the callback host has no address to call")
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return PostResult(False, error=f"no answer within {self.timeout:g}s")
            conn = self._connection(target, str(address), remaining)
            try:
                try:
                    conn.connect()
                except OSError as exc:
                    # Nothing was sent: the next checked address may answer.
                    failed = _unreachable(exc, address, delivery_id)
                    continue
                cut = threading.Event()
                cutoff = threading.Timer(deadline - time.monotonic(), _cut, (conn, cut))
                cutoff.daemon = True
                cutoff.start()
                late = PostResult(False, error=f"no answer within {self.timeout:g}s")
                try:
                    conn.request("POST", target.path, body=body, headers=headers)
                    # Status line and headers only: the body is neither read nor stored.
                    status = conn.getresponse().status
                    # A cut mid-headers reads as their end: the answer is not trusted.
                    return late if cut.is_set() else _judge(status)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    if cut.is_set():
                        return late
                    return _unreachable(exc, address, delivery_id)
                finally:
                    cutoff.cancel()
            finally:
                conn.close()
        return failed

    def _connection(
        self, target: CallbackTarget, address: str, timeout: float
    ) -> http.client.HTTPConnection:
        if target.scheme == "https":
            return _PinnedHTTPS(target.host, target.port, address, timeout, self.tls)
        return _PinnedHTTP(target.host, target.port, address, timeout)


def _cut(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """At the attempt's deadline: end the connection, so a blocked read returns at once."""
    cut.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _unreachable(exc: BaseException, address: object, delivery_id: str) -> PostResult:
    """A failed connection or exchange: the address and the socket's text stay with the
    operator (the log, and the attempt's `detail`); the tenant reads the fixed text."""
    found = incident(exc, f"webhook delivery {delivery_id} to {address}",
                     kind=IncidentKind.NETWORK)  # fmt: skip
    return PostResult(False, error=found.text,
                      detail=f"{address}: {summary(exc, typed=True, limit=300)}")  # fmt: skip


def _judge(status: int) -> PostResult:
    if 200 <= status < 300:
        return PostResult(True, status)
    if 300 <= status < 400:
        return PostResult(
            False, status, f"answered {status}; redirects are not followed", permanent=True
        )
    if status == 410:
        return PostResult(False, status, "answered 410 Gone", permanent=True)
    return PostResult(False, status, f"answered {status}")
