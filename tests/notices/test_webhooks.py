"""Webhooks: the allow-list and address checks, the signature, a POST that goes where checked."""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import CallbackRefused
from notices.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    CallbackPolicy,
    WebhookSender,
    sign,
    verify_signature,
)

SECRET = b"whsec-test"


def fixed(*addresses: str) -> Any:
    """A resolver that answers every name with these addresses."""
    return lambda _host, _port: list(addresses)


class Receiver:
    """A local HTTP server recording each request; `mode` says how it answers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode = "ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body,
                                          "path": self.path})  # fmt: skip
                if receiver.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                    self.end_headers()
                elif receiver.mode == "slow-body":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    self.wfile.flush()
                    time.sleep(3)  # the sender must not wait for a body it never reads
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def refusal(policy: CallbackPolicy, url: str) -> str:
    with pytest.raises(CallbackRefused) as caught:
        policy.check(url)
    return str(caught.value)


def test_with_no_host_allowed_every_callback_is_refused() -> None:
    assert "ADVISOR_WEBHOOK_ALLOWED_HOSTS" in refusal(CallbackPolicy(()), "https://example.com/")


def test_loopback_metadata_and_private_addresses_are_refused_unless_named() -> None:
    anywhere = CallbackPolicy(("*",))
    assert "non-public address (127.0.0.1)" in refusal(anywhere, "http://127.0.0.1:8080/hook")
    assert "169.254.169.254" in refusal(anywhere, "http://169.254.169.254/latest/meta-data/")
    assert "non-public" in refusal(anywhere, "http://[::ffff:127.0.0.1]/")
    assert "non-public" in refusal(anywhere, "http://2130706433/")  # 127.0.0.1 as a number
    # Real resolution: `localhost` is a name that resolves to a loopback address.
    assert "non-public address" in refusal(anywhere, "http://localhost/hook")
    named = CallbackPolicy(("127.0.0.1", "localhost"))
    assert named.check("http://127.0.0.1:8080/hook").port == 8080
    assert named.check("http://localhost/hook").host == "localhost"


def test_a_host_outside_the_list_or_resolving_privately_is_refused() -> None:
    policy = CallbackPolicy(("hooks.example.com", "*.partner.example"), fixed("10.1.2.3"))
    assert "not in ADVISOR_WEBHOOK_ALLOWED_HOSTS" in refusal(policy, "https://evil.example/x")
    assert "not in" in refusal(policy, "https://partner.example.evil.example/x")
    # Allowed by a wildcard only: the address must be public.
    assert "non-public address (10.1.2.3)" in refusal(policy, "https://a.partner.example/x")
    # Allowed by name: the operator vouched for it, private address included.
    assert policy.check("https://hooks.example.com/x").host == "hooks.example.com"
    public = CallbackPolicy(("*.partner.example",), fixed("93.184.216.34", "10.0.0.1"))
    assert "10.0.0.1" in refusal(public, "https://a.partner.example/x")  # every address counts
    assert CallbackPolicy(("*",), fixed("93.184.216.34")).check("https://a.example/").port == 443


def test_malformed_callbacks_are_refused_with_the_reason() -> None:
    policy = CallbackPolicy(("*",), fixed("93.184.216.34"))
    assert "http:// or https://" in refusal(policy, "ftp://files.example/x")
    assert "http:// or https://" in refusal(policy, "file:///etc/passwd")
    assert "credentials" in refusal(policy, "https://user:pw@a.example/")
    assert "no host" in refusal(policy, "https:///path")
    assert "control characters" in refusal(policy, "https://a.example/\nHost: x")
    assert "limit is 2048" in refusal(policy, "https://a.example/" + "x" * 2048)
    unresolvable = CallbackPolicy(("*",), lambda _h, _p: (_ for _ in ()).throw(socket.gaierror()))
    assert "does not resolve" in refusal(unresolvable, "https://nowhere.example/")


def test_a_signature_verifies_and_a_changed_body_or_an_old_stamp_does_not() -> None:
    body = b'{"job_id":"j1","status":"succeeded"}'
    now = int(time.time())
    header = sign(SECRET, body, now)
    expected = hmac.new(SECRET, f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={expected}"
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature(b"other", header, body)
    assert not verify_signature(SECRET, sign(SECRET, body, now - 301), body)
    assert not verify_signature(SECRET, "v1=" + expected, body)


def test_a_post_is_signed_and_goes_to_the_checked_address_under_the_urls_name(
    receiver: Receiver,
) -> None:
    # hooks.test exists in no DNS: the connection can only reach the address the policy checked.
    policy = CallbackPolicy(("hooks.test",), fixed("127.0.0.1"))
    sender = WebhookSender(policy, SECRET, timeout=2)
    body = b'{"job_id":"j1"}'
    result = sender.post(f"http://hooks.test:{receiver.port}/advisor?k=1", body, "d-1")
    assert (result.ok, result.status_code) == (True, 204)
    [request] = receiver.requests
    headers = request["headers"]
    assert (request["path"], request["body"]) == ("/advisor?k=1", body)
    assert headers["Host"] == f"hooks.test:{receiver.port}"
    assert headers[DELIVERY_HEADER] == "d-1"
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)


def test_a_redirect_is_not_followed_and_a_slow_body_is_not_waited_for(
    receiver: Receiver,
) -> None:
    sender = WebhookSender(CallbackPolicy(("127.0.0.1",)), SECRET, timeout=2)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    receiver.mode = "redirect"
    redirected = sender.post(url, b"{}", "d-2")
    assert (redirected.ok, redirected.status_code, redirected.permanent) == (False, 302, True)
    assert "not followed" in (redirected.error or "")
    assert len(receiver.requests) == 1
    receiver.mode = "slow-body"
    started = time.monotonic()
    assert sender.post(url, b"{}", "d-3").ok
    assert time.monotonic() - started < 1.5


def test_a_name_that_turns_private_after_submit_is_refused_at_connect(
    receiver: Receiver,
) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    policy = CallbackPolicy(("*.rebind.test",), lambda _h, _p: next(answers))
    url = f"http://a.rebind.test:{receiver.port}/hook"
    policy.check(url)  # at submit: public
    result = WebhookSender(policy, SECRET, timeout=2).post(url, b"{}", "d-4")
    assert (result.ok, result.permanent) == (False, True)
    assert "non-public address (127.0.0.1)" in (result.error or "")
    assert receiver.requests == []


def test_a_receiver_that_never_answers_fails_within_the_time_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        sender = WebhookSender(CallbackPolicy(("127.0.0.1",)), SECRET, timeout=0.5)
        started = time.monotonic()
        result = sender.post(f"http://127.0.0.1:{port}/", b"{}", "d-5")
    assert not result.ok and not result.permanent
    assert time.monotonic() - started < 2
    closed = sender.post(f"http://127.0.0.1:{port}/", b"{}", "d-6")
    assert not closed.ok and "Connection" in (closed.detail or "")


def test_https_checks_the_certificate_against_the_urls_name_not_the_address(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path, "hooks.test")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    receiver = Receiver()
    receiver.server.socket = served.wrap_socket(receiver.server.socket, server_side=True)
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        policy = CallbackPolicy(("hooks.test", "other.test"), fixed("127.0.0.1"))
        sender = WebhookSender(policy, SECRET, timeout=2, tls=trusted)
        assert sender.post(f"https://hooks.test:{receiver.port}/h", b"{}", "d-7").ok
        wrong = sender.post(f"https://other.test:{receiver.port}/h", b"{}", "d-8")
        assert not wrong.ok and "CERTIFICATE_VERIFY_FAILED" in (wrong.detail or "")
    finally:
        receiver.close()
    assert len(receiver.requests) == 1


def self_signed(root: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = root / "cert.pem", root / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return cert_path, key_path
