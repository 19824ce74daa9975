"""Every gateway startup failure is one line naming the problem and the way out, exit 1."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.conftest import free_port
from tests.producers.gateway.conftest import wait_for_http
from tests.support import Env, script


def _start(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    values = {"ADVISOR_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run(
        [*script("advisor-gateway"), *args], env=Env(values).full(), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("advisor-gateway: error: ")
    return line


def test_a_port_in_use_is_one_line_naming_it_and_how_to_free_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line(_start(tmp_path, "--port", str(port)))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert "another --port" in line


def test_a_port_out_of_range_is_one_line_giving_the_range(tmp_path: Path) -> None:
    for port in ("99999", "http"):
        line = _one_line(_start(tmp_path, "--port", port))
        assert f"{port!r} is not a TCP port: give 1-65535" in line


def test_an_unreadable_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    line = _one_line(_start(tmp_path, "--port", "1", ADVISOR_MAX_IMAGE_BYTES="lots"))
    assert "ADVISOR_MAX_IMAGE_BYTES" in line and "lots" not in line
    assert "fix or unset it" in line


def test_a_started_gateway_names_the_address_it_listens_on(tmp_path: Path) -> None:
    port = free_port()
    values = {"ADVISOR_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "gateway.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*script("advisor-gateway"), "--port", str(port)], env=Env(values).full(),
            cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/openapi.json", 60, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert f"Listening on http://127.0.0.1:{port} (Ctrl-C stops)" in log.read_text()
