"""Private Redis and PostgreSQL servers that a fault test may stop and restart at will."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port, is_listening
from tests.support import eventually


def _require_binary(path: str | None, what: str) -> str:
    if path:
        return path
    message = f"{what} is not installed"
    if IN_CI:
        pytest.fail(message + " (CI=true: fault tests need it)")
    pytest.skip(message)


def _wait_listening(port: int, timeout: float, proc_log: Path) -> None:
    eventually(f"something listening on {port}", lambda: is_listening("127.0.0.1", port), timeout,
               context=lambda: _tail(proc_log))  # fmt: skip


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


class RedisServer:
    """`redis-server` on a port of its own, without persistence: a restart loses every message."""

    def __init__(self, log_dir: Path) -> None:
        self.binary = _require_binary(shutil.which("redis-server"), "redis-server")
        self.port = free_port()
        self.log = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no"],
                stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_listening(self.port, 10, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on its own port; stop() and start()."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = _require_binary(found[-1] if found else shutil.which("initdb"), "initdb")
        self.bin = Path(initdb).parent
        self.port = free_port()
        # initdb refuses root; the cluster then belongs to the postgres user, in a dir it owns.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="advisor-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed: {done.stdout}{done.stderr}\n{_tail(self.log)}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w",
                  "start")  # fmt: skip
        _wait_listening(self.port, 30, self.log)

    def stop(self) -> None:
        # Fast: open connections are cut, as when a server goes down under load.
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
