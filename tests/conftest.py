"""Shared fixtures: real SQLite, PostgreSQL, Redis, RabbitMQ (absent: skip locally, fail in CI).

Also the test tiers: every test that starts a worker, gateway or server subprocess is marked
`slow` by what it uses (see `pytest_collection_modifyitems`), and the parallel run's shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import shutil
import socket
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from filelock import FileLock

from tests.support import SUBPROCESS_STARTERS

PG_ADMIN_URL = os.environ.get("ADVISOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
IN_CI = os.environ.get("CI", "").lower() == "true"

# One OpenBLAS thread for the test process and every process it starts (the environment is
# inherited), set before anything loads OpenBLAS: four processes with workers on two cores,
# where a pool per process only spins against the others (measured: docs/testing.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Nothing can be downloaded here; set before the first worker is forked (tests/forkserver.py).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def is_listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is absent locally; in CI (CI=true) its absence is a failure."""
    if is_listening(host, port):
        return
    message = f"{name} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'advisor.db'}"


@contextmanager
def postgres_database(prefix: str = "advisor_test") -> Iterator[str]:
    """A fresh PostgreSQL database of its own, dropped on exit; never touches others."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    from store.db import engine_for

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        yield url
    finally:
        engine = engine_for(url)
        held = engine.pool.checkedout()
        engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    # dispose() closes idle connections only: one still checked out (a thread outliving its
    # test) is garbage-collected open later, failing some other test with a ResourceWarning.
    assert held == 0, f"{held} connection(s) to {name} still checked out when its test ended"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url".replace("postgresql", "postgres")))


@pytest.fixture
def migrated_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return migrated_copy(database_url, tmp_path_factory)  # at head: a copy of a migrated one


def migrations_digest() -> str:
    """Names the migration scripts' content: a template is reused only for the same scripts."""
    from store import migrate

    root = migrate.script_location()
    digest = hashlib.sha256()
    for path in sorted([root / "env.py", *(root / "versions").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def migrated_copy(url: str, factory: pytest.TempPathFactory) -> str:
    """The empty database at `url` made a copy of one migrated once (docs/testing.md): a file
    per run for SQLite, a kept `advisor_template_<digest>` database for PostgreSQL."""
    if url.startswith("sqlite"):
        from store import migrate
        from store.db import engine_for

        def build(target: Path) -> None:
            target.mkdir(parents=True, exist_ok=True)
            built = f"sqlite:///{target / 'advisor.db'}"
            migrate.upgrade(built)
            engine_for(built).dispose()  # the last close folds the WAL into the file copied
            assert not (target / "advisor.db-wal").exists()

        template = shared_dir(factory, f"migrated-sqlite-{migrations_digest()}", build)
        shutil.copyfile(template / "advisor.db", url.removeprefix("sqlite:///"))
        return url
    name = url.rsplit("/", 1)[1]
    template = postgres_template(factory)
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}"')  # created empty a moment ago, never connected to
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return url


def postgres_template(factory: pytest.TempPathFactory) -> str:
    """The migrated template's name on the shared server, created if absent."""
    import psycopg

    name = f"advisor_template_{migrations_digest()}"

    def build(target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is not None:
                return
        from store import migrate
        from store.db import engine_for

        with postgres_database(prefix="advisor_template_build") as building:
            migrate.upgrade(building)
            engine_for(building).dispose()
            staged = building.rsplit("/", 1)[1]
            # Published whole, or not at all: another run may have won meanwhile.
            with (
                psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn,
                contextlib.suppress(psycopg.errors.DuplicateDatabase),
            ):
                conn.execute(f'ALTER DATABASE "{staged}" RENAME TO "{name}"')

    shared_dir(factory, f"migrated-postgres-{migrations_digest()}", build)
    return name


REDIS_CLAIM = "advisor-tests:db:{}"  # in db 0: which test process holds database index N


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database index (1-15) claimed by this test process alone for the session.

    Claimed in db 0 with SET NX, so parallel workers and other test runs on the same server
    never flush each other's database; the claim expires if the process dies.
    """
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    try:
        claimed = next(
            (n for n in range(1, 16) if client.set(REDIS_CLAIM.format(n), owner, nx=True, ex=7200)),
            None,
        )
        if claimed is None:
            pytest.fail(
                "Every Redis database 1-15 is claimed by another test process; wait for "
                f"them to finish, or delete stale claims: redis-cli DEL {REDIS_CLAIM.format('N')}"
            )
        yield claimed
        if client.get(REDIS_CLAIM.format(claimed)) == owner.encode():
            client.delete(REDIS_CLAIM.format(claimed))
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_db: int) -> str:
    """This process's own Redis database index on the shared server, flushed before use."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    return f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}//"


def shared_dir(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """`name` built once per test run: parallel workers share it through a file lock."""
    base = factory.getbasetemp()
    # Under xdist each worker's base is gwN/ inside the run's own directory: share that one.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    target = root / name
    with FileLock(str(target) + ".lock"):
        if not (target / ".built").exists():
            build(target)
            (target / ".built").touch()
    return target


TINY_SEED = 0
# The suite's models keep Qwen's first 8,192 BPE ranks: the same tokenizer's pieces, JSON
# and critiques of about the same token counts, and a head 1/18 of Qwen's 151,936 rows, so a
# decode step and a worker start cost a fraction of the real shape's on this CPU. Tests of
# the real shape itself use `qwen_model_dir` (docs/testing.md, "Which model a test uses").
TEST_VOCAB = 8192


def _model_dir(factory: pytest.TempPathFactory, vocab: int | None) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing can be downloaded here

    def build(target: Path) -> None:
        from advisor_worker.devtools.tiny_model import build_tiny_model

        build_tiny_model(target, seed=TINY_SEED, vocab=vocab)

    name = f"tiny-qwen3-vl-{TINY_SEED}" + ("" if vocab is None else f"-first{vocab}")
    return shared_dir(factory, name, build)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's seeded tiny Qwen3-VL checkpoint (Qwen's first TEST_VOCAB ranks), built once."""
    return _model_dir(tmp_path_factory, TEST_VOCAB)


@pytest.fixture(scope="session")
def qwen_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint at the real shape: Qwen's whole vocabulary, 151,936 head rows."""
    return _model_dir(tmp_path_factory, None)


@pytest.fixture(scope="session")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random MLX-format adapter for the tiny model, built once per run."""

    def build(target: Path) -> None:
        from advisor_worker.devtools.adapter_maker import write_random_adapter

        write_random_adapter(tiny_model_dir, target, fmt="mlx")

    return shared_dir(tmp_path_factory, f"adapter-{TINY_SEED}", build)


# Modules whose use makes a test slow: processes, and fuzzing the whole API (a minute alone).
SLOW_MODULES = frozenset({"subprocess", "multiprocessing", "schemathesis"})

# Fixtures whose use makes a test slow: the tiny model loaded in the test process decodes.
SLOW_FIXTURES = frozenset({"tiny_model"})

SLOW_TIMEOUT = 900  # seconds; pyproject's 300 stays for the in-process tests


def _starts_subprocess(func: object, seen: set[int], depth: int = 0) -> bool:
    """Whether `func`, or a tests/ helper it names, names a subprocess starter."""
    func = inspect.unwrap(func) if callable(func) else func  # a @contextmanager's own body
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen or depth > 4:
        return False
    seen.add(id(code))
    codes = [code]
    while codes:
        current = codes.pop()
        if SUBPROCESS_STARTERS.intersection(current.co_names):
            return True
        codes.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        scope = getattr(func, "__globals__", {})
        for name in current.co_names:
            helper = scope.get(name)
            if isinstance(helper, types.ModuleType):
                if helper.__name__ in SLOW_MODULES:  # `import multiprocessing as mp`
                    return True
                continue
            module = getattr(helper, "__module__", "") or ""
            if not (module.startswith("tests") and callable(helper)):
                continue
            targets = vars(helper).values() if isinstance(helper, type) else [helper]
            if any(_starts_subprocess(t, seen, depth + 1) for t in targets):
                return True
    return False


def _tier(item: pytest.Function) -> tuple[bool, str | None]:
    """(starts a subprocess, the shared live fixture it needs on one process, if any)."""
    seen: set[int] = set()
    slow = _starts_subprocess(item.function, seen)
    group = None
    info = getattr(item, "_fixtureinfo", None)
    for name in info.names_closure if info else ():
        slow = slow or name in SLOW_FIXTURES
        for fixturedef in info.name2fixturedefs.get(name, ()):
            slow = slow or _starts_subprocess(fixturedef.func, set())
            # A module's or package's fixture (a live stack, twenty generations) is built once
            # per process: the tests sharing it run in one process, so it is built once.
            if fixturedef.scope in ("module", "package"):
                group = f"{fixturedef.baseid or 'tests'}::{name}"
    return slow, group


# The longest units of work, measured (docs/benchmarks.md): queued first, so that no process
# picks one up near the end while the others sit idle. A path prefix; the rest follow by kind.
LONGEST_FIRST = (
    "tests/producers/gateway/",  # the package's live stack: 61 tests, ~480 s summed
    "tests/advisor_worker/test_plan_control_e2e.py",  # three tests on a live stack, ~480 s
    "tests/test_rollout_runbook_run.py",  # one test, ~320 s
    "tests/advisor_worker/test_plan_e2e.py",
    "tests/producers/test_demo.py",
    "tests/advisor_worker/test_structured.py",  # twenty generations in the test process
    "tests/faults/hostile/",
    "tests/faults/test_multi_host.py",
    "tests/faults/test_broker_restart.py",
    "tests/faults/test_batch_worker.py",
)


def _start_rank(item: pytest.Item) -> tuple[int, int, int]:
    """Listed long units first, then shared stacks (groups), subprocess tests, the rest."""
    grouped = item.get_closest_marker("xdist_group") is not None
    slow = item.get_closest_marker("slow") is not None
    listed = next((i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)), None)
    if listed is None or not (grouped or slow):  # a listed module's quick tests wait their turn
        listed = len(LONGEST_FIRST)
    return (listed, 0 if grouped else 1, 0 if slow else 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tier by use: a test reaching a worker, gateway, server or any subprocess is `slow`, and
    tests sharing a module- or package-scoped fixture run in one xdist group (`loadgroup`).
    Then the longest first (xdist hands out work in this order under --no-loadscope-reorder)."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        slow, group = _tier(item)
        if slow and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            # Subprocess tests beside three others on two cores take minutes, not seconds.
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
        if group is not None and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
    if getattr(config.option, "loadgroup", False):  # set on an xdist worker under loadgroup
        _suffix_groups(items)
    items.sort(key=_start_rank)  # stable: the collection order within each rank


def _suffix_groups(items: list[pytest.Item]) -> None:
    """Put each test's xdist group into its node id, which `--dist loadgroup` schedules by.

    xdist 3.8's worker does it by setting `item._nodeid`, which pytest 9 no longer reads (a
    node id is now `str(item._id)`): every test was scheduled alone, and a module's live
    stack was built on each process that drew one of its tests (three times for the
    plan-control module in a full run). Same text as xdist's suffix.
    """
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})  # fmt: skip
        if names and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
