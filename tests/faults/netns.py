"""Hosts on one machine: network namespaces joined by veth links, which a test can cut.

Namespace `host` holds Redis, PostgreSQL and the gateway; each worker namespace has one link
to it. The test process, in the root namespace, reaches `host` over a link of its own.

    root 10.N.0.1 ──── 10.N.0.2 host 10.N.k.1 ──── 10.N.k.2 worker k
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.faults.servers import PostgresCluster
from tests.support import eventually


def require_netns() -> None:
    """Root, `ip` and `nft`: skip locally without them, fail in CI."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    problem = None
    if os.geteuid() != 0:
        problem = "network namespaces need root"
    elif missing:
        problem = f"{', '.join(missing)} not installed (scripts/system-deps.sh test installs them)"
    if problem is not None:
        if IN_CI:
            pytest.fail(problem + " (CI=true)")
        pytest.skip(problem)


def run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {done.stderr.strip()}")


@dataclass
class Network:
    """`host` plus `workers` namespaces; names and addresses unique to this test."""

    workers: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    net: int = field(default_factory=lambda: random.randint(100, 250))
    created: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"adv-host-{self.tag}"

    def worker(self, k: int) -> str:
        return f"adv-w{k}-{self.tag}"

    def host_address(self, link: int) -> str:
        """Where link `link` (0: the test's own, k: worker k) reaches the host namespace."""
        return f"10.{self.net}.{link}.{2 if link == 0 else 1}"

    def _veth(self, link: int) -> tuple[str, str]:
        return f"vh{link}-{self.tag}", f"vp{link}-{self.tag}"  # host side, peer side

    def __enter__(self) -> Network:
        run("ip", "netns", "add", self.host)
        self.created.append(self.host)
        run("ip", "-n", self.host, "link", "set", "lo", "up")
        for k in range(self.workers + 1):
            host_end, peer_end = self._veth(k)
            peer_ns = None if k == 0 else self.worker(k)
            if peer_ns is not None:
                run("ip", "netns", "add", peer_ns)
                self.created.append(peer_ns)
                run("ip", "-n", peer_ns, "link", "set", "lo", "up")
            run("ip", "link", "add", host_end, "type", "veth", "peer", "name", peer_end)
            run("ip", "link", "set", host_end, "netns", self.host)
            if peer_ns is not None:
                run("ip", "link", "set", peer_end, "netns", peer_ns)
            host_ip, peer_ip = (
                (f"10.{self.net}.0.2", f"10.{self.net}.0.1") if k == 0
                else (f"10.{self.net}.{k}.1", f"10.{self.net}.{k}.2")
            )  # fmt: skip
            run("ip", "-n", self.host, "addr", "add", f"{host_ip}/24", "dev", host_end)
            run("ip", "-n", self.host, "link", "set", host_end, "up")
            peer = ["ip"] if peer_ns is None else ["ip", "-n", peer_ns]
            run(*peer, "addr", "add", f"{peer_ip}/24", "dev", peer_end)
            run(*peer, "link", "set", peer_end, "up")
        return self

    def __exit__(self, *_exc: object) -> None:
        for name in reversed(self.created):
            # Deleting a namespace deletes the veth ends inside it, and so their peers.
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", self._veth(0)[1]], capture_output=True)

    def exec_prefix(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    # -- faults -----------------------------------------------------------------------

    def cut(self, k: int) -> None:
        """Worker k's host loses its only link: packets vanish, no connection is reset."""
        run("ip", "-n", self.host, "link", "set", self._veth(k)[0], "down")

    def restore(self, k: int) -> None:
        run("ip", "-n", self.host, "link", "set", self._veth(k)[0], "up")

    def block_port(self, k: int, port: int) -> None:
        """Worker k's host can no longer reach `port` on the host (dropped, as by a firewall)."""
        ns = self.worker(k)
        table = f"cut{port}"
        run("ip", "netns", "exec", ns, "nft", "add", "table", "inet", table)
        run("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", table, "out",
            "{ type filter hook output priority 0 ; }")  # fmt: skip
        run("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", table, "out", "tcp",
            "dport", str(port), "drop")  # fmt: skip

    def unblock_port(self, k: int, port: int) -> None:
        run("ip", "netns", "exec", self.worker(k), "nft", "delete", "table", "inet", f"cut{port}")


class NetnsPostgres(PostgresCluster):
    """A throwaway cluster serving inside a namespace, on every address, trusting the test net."""

    def __init__(self, namespace: str, address: str) -> None:
        super().__init__()
        self.namespace = namespace
        self.address = address
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.0.0.0/8 trust\n")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.address}:{self.port}/postgres"

    def url_via(self, address: str) -> str:
        return f"postgresql+psycopg://postgres@{address}:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=* -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        cmd = ["ip", "netns", "exec", self.namespace, "runuser", "-u", "postgres", "--",
               str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
               str(self.log), "-w", "start"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"pg_ctl start failed: {done.stderr}")

    def stop(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
             "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip


def wait_port(address: str, port: int, timeout: float = 30) -> None:
    import socket

    def listening() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((address, port)) == 0

    eventually(f"something listening on {address}:{port}", listening, timeout)


def start_in(
    network: Network, namespace: str, argv: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [*network.exec_prefix(namespace), *argv], env=env, stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
