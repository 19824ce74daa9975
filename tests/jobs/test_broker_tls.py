"""TLS brokers: rediss:// verifies the server's certificate, and jobs travel over it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.broker import make_celery, queue_depths
from jobs.contracts import ANALYZE_TASK, queue_for
from jobs.errors import BrokerUnreachable
from jobs.settings import Settings
from tests.conftest import IN_CI, free_port, is_listening
from tests.support import eventually


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private redis-server speaking TLS only, with a certificate from a throwaway CA."""
    if not (shutil.which("redis-server") and shutil.which("openssl")):
        if IN_CI:
            pytest.fail("redis-server and openssl are needed (CI=true)")
        pytest.skip("redis-server or openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=advisor-test-ca",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=d,
    )
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no"],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def listening() -> bool:
        if is_listening("127.0.0.1", port):
            return True
        assert proc.poll() is None, "redis-server (TLS) exited"
        return False

    try:
        eventually("redis-server (TLS) to listen", listening, 10)
        yield port, d / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_rediss_broker_carries_jobs_with_the_certificate_verified(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = tls_redis
    settings = Settings(
        data_dir=tmp_path, broker_url=f"rediss://127.0.0.1:{port}/0", broker_ca_file=ca
    )
    app = make_celery(settings, "tls-test")
    queue = queue_for("base")
    try:
        app.send_task(ANALYZE_TASK, kwargs={"job_id": "j"}, queue=queue)
        assert queue_depths(app, [queue]) == {queue: 1}
    finally:
        app.close()


def test_a_rediss_broker_whose_certificate_cannot_be_verified_is_refused(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ca = tls_redis
    settings = Settings(data_dir=tmp_path, broker_url=f"rediss://127.0.0.1:{port}/0")
    app = make_celery(settings, "tls-test")
    try:
        with pytest.raises(BrokerUnreachable, match="certificate verify failed|SSL"):
            queue_depths(app, [queue_for("base")], timeout=2)
    finally:
        app.close()


def test_amqps_urls_are_accepted_and_verify_certificates(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="amqps://u:p@rabbit.example:5671//")
    app = make_celery(settings, "tls-test")
    assert app.conf.broker_use_ssl["cert_reqs"] == 2  # ssl.CERT_REQUIRED
    app.close()
