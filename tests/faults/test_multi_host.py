"""Three hosts on one machine (network namespaces): a worker host cut off, then cut from PostgreSQL.

`host` runs Redis, PostgreSQL and the gateway; two worker hosts run one worker each. Every
job must succeed exactly once, the other worker must take over, and the cut worker must
serve again once its network is back, without a restart.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from jobs.clock import utcnow
from jobs.settings import Settings
from store import migrate
from store.db import engine_for
from store.models import Job
from store.repository import Repository
from tests.conftest import free_port
from tests.faults.conftest import Tally, sweeping, tally
from tests.faults.netns import NetnsPostgres, Network, require_netns, start_in, wait_port
from tests.support import (
    WORKER_BIN,
    Env,
    WorkerProcess,
    eventually,
    wait_until_final,
    wait_until_ready,
)

pytestmark = pytest.mark.slow
CUT_SECONDS = 20


def photo(seed: int) -> str:
    buffer = io.BytesIO()
    img = Image.effect_mandelbrot((96, 64), (-2 + (seed % 97) * 0.01, -1, 1, 1), 30).convert("RGB")
    img.save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Hosts:
    network: Network
    settings: Settings  # as the test process (root namespace) reaches the host
    gateway_url: str
    workers: dict[int, WorkerProcess]  # worker host k -> its worker
    pg_port: int
    log_dir: Path

    @property
    def repo(self) -> Repository:
        return Repository(engine_for(self.settings.resolved_database_url))

    def name_of(self, k: int) -> str:
        pid = self.workers[k].proc.pid
        [beat] = [b for b in self.repo.live_workers(3600) if b.pid == pid]
        return beat.worker

    def submit(self, count: int, first_seed: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=self.gateway_url, timeout=30) as client:
            for seed in range(first_seed, first_seed + count):
                answer = client.post("/analyze", json={"image_base64": photo(seed),
                                                       "advisor": "ansel"})  # fmt: skip
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["job_id"])
        return ids

    def is_live(self, k: int, within: float = 3.0) -> bool:
        pid = self.workers[k].proc.pid
        beats = [b for b in self.repo.live_workers(within) if b.pid == pid]
        return bool(beats)


@pytest.fixture
def hosts(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Hosts]:
    require_netns()
    with Network(workers=2) as network:
        procs = []
        try:
            yield _start(network, tmp_path, tiny_model_dir, procs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except Exception:  # noqa: BLE001 - a stuck process is killed, whatever it did
                    proc.kill()
                    proc.wait(timeout=20)


def _start(network: Network, root: Path, model: Path, procs: list) -> Hosts:  # type: ignore[type-arg]
    host = network.host
    redis_port, gateway_port = free_port(), free_port()
    redis = start_in(network, host, ["redis-server", "--port", str(redis_port), "--bind",
                                     "0.0.0.0", "--protected-mode", "no", "--save", "",
                                     "--appendonly", "no"], {}, root / "redis.log")  # fmt: skip
    procs.append(redis)
    postgres = NetnsPostgres(host, network.host_address(0))
    postgres.start()
    procs.append(_Stopper(postgres))
    reach = network.host_address(0)
    wait_port(reach, redis_port)
    wait_port(reach, postgres.port)
    migrate.upgrade(postgres.url_via(reach))
    (root / "registry.json").write_text(json.dumps({"variants": {}}))
    common = {
        "ADVISOR_DATA_DIR": str(root / "data"),
        "ADVISOR_BASE_MODEL": str(model),
        "ADVISOR_REGISTRY": str(root / "registry.json"),
        "ADVISOR_TEXT_LIMIT": "160",
        "ADVISOR_MAX_OUTPUT_TOKENS": "1800",
        "ADVISOR_HEARTBEAT_INTERVAL": "1",
        "ADVISOR_WORKER_LIVE_WINDOW": "6",
        "ADVISOR_TASK_TIME_LIMIT": "90",
    }

    def env_via(address: str) -> Env:
        return Env({**common, "ADVISOR_DATABASE_URL": postgres.url_via(address),
                    "ADVISOR_BROKER_URL": f"redis://{address}:{redis_port}/0"})  # fmt: skip

    gateway = start_in(
        network, host, [str(Path(sys.executable).parent / "advisor-gateway"), "--host",
                        "0.0.0.0", "--port", str(gateway_port)],
        env_via("127.0.0.1").full(), root / "gateway.log",
    )  # fmt: skip
    procs.append(gateway)
    here = env_via(reach).values
    settings = Settings(**{k.removeprefix("ADVISOR_").lower(): v for k, v in here.items()})
    repo = Repository(engine_for(settings.resolved_database_url))
    workers: dict[int, WorkerProcess] = {}
    for k in (1, 2):
        log = root / f"worker-{k}.log"
        proc = start_in(network, network.worker(k), [*WORKER_BIN, "run", "--variant", "base"],
                        env_via(network.host_address(k)).full(), log)  # fmt: skip
        procs.append(proc)
        workers[k] = WorkerProcess("base", proc, log)
    for worker in workers.values():
        wait_until_ready(worker, repo, 120)
    wait_port(reach, gateway_port)
    return Hosts(network, settings, f"http://{reach}:{gateway_port}", workers, postgres.port, root)


class _Stopper:
    """The cluster as a process to stop with the others."""

    def __init__(self, cluster: NetnsPostgres) -> None:
        self.cluster = cluster
        self.stopped = False

    def poll(self) -> int | None:
        return 0 if self.stopped else None

    def terminate(self) -> None:
        self.cluster.destroy()
        self.stopped = True

    def wait(self, timeout: float) -> int:
        return 0

    def kill(self) -> None:
        self.terminate()


def wait_generating_on(hosts: Hosts, k: int, ids: list[str], timeout: float = 60) -> list[Job]:
    """Jobs running on worker host k: started, so generating (the image loads in ms).

    Token progress is only written once a second, and a tiny-model job may finish sooner.
    """
    running = (Job.id.in_(ids), Job.worker == hosts.name_of(k), Job.status == "running")
    return eventually(f"a job generating on worker host {k}", lambda: hosts.repo.find(*running),
                      timeout, poll=0.02)  # fmt: skip


def serves_again(hosts: Hosts, k: int, first_seed: int, timeout: float = 90) -> list[str]:
    """Submit until worker host k finishes one; the ids submitted on the way."""
    deadline = time.monotonic() + timeout
    eventually(f"worker host {k} to beat again", lambda: hosts.is_live(k), timeout, poll=0.5)
    name, sent = hosts.name_of(k), []
    while time.monotonic() < deadline:
        ids = hosts.submit(4, first_seed + len(sent))
        sent += ids
        done = wait_until_final(hosts.repo, ids, timeout=120)
        if any(job.worker == name for job in done.values()):
            return sent
    raise AssertionError(f"worker host {k} took no job within {timeout}s")


def test_a_cut_off_worker_host_loses_no_job_and_serves_again_without_a_restart(
    hosts: Hosts,
) -> None:
    w1, w2 = hosts.name_of(1), hosts.name_of(2)
    pid1 = hosts.workers[1].proc.pid
    with sweeping(hosts.settings):
        # 1. Worker host 1 loses its network for 20 s mid-generation.
        first = hosts.submit(8, first_seed=0)
        stranded = wait_generating_on(hosts, 1, first)
        hosts.network.cut(1)
        cut_at = time.monotonic()
        time.sleep(CUT_SECONDS)
        hosts.network.restore(1)
        jobs = wait_until_final(hosts.repo, first, timeout=180)
        recovered = serves_again(hosts, 1, first_seed=100)
        # 2. Worker host 1 loses PostgreSQL only; Redis still delivers to it.
        hosts.network.block_port(1, hosts.pg_port)
        blocked_at = utcnow()
        second = hosts.submit(6, first_seed=200)
        jobs.update(wait_until_final(hosts.repo, second, timeout=180))
        assert not hosts.is_live(1), "worker host 1 still beat while cut from PostgreSQL"
        hosts.network.unblock_port(1, hosts.pg_port)
        again = serves_again(hosts, 1, first_seed=300)
    sent = [*first, *recovered, *second, *again]
    result = tally(hosts.repo, sent, list(hosts.workers.values()))
    print(result.line(f"network cut {CUT_SECONDS}s + PostgreSQL cut"),
          f"stranded={len(stranded)} (cut {time.monotonic() - cut_at:.0f}s ago)")  # fmt: skip

    assert result.lost == 0 and result.succeeded == result.sent == result.finished, result
    for job in stranded:
        # Re-queued while its host was cut off, then finished once: by whichever worker took
        # the message first (host 1, back on the network, may take its own job again; its
        # older attempt's outcome is then the one kept, and the later run is discarded).
        assert jobs[job.id].attempts >= 2, "the stranded job was never re-queued"
        assert jobs[job.id].worker in (w1, w2)
    assert all(jobs[i].worker == w2 for i in second
               if (jobs[i].started_at or blocked_at) >= blocked_at)  # fmt: skip
    # The same process served throughout: no restart.
    assert hosts.workers[1].proc.poll() is None and hosts.workers[1].proc.pid == pid1
    assert hosts.workers[2].proc.poll() is None
    log = hosts.workers[1].output()
    assert "Unrecoverable error" not in log and "hard time limit" not in log.lower()
    assert isinstance(result, Tally) and w1 != w2
