"""The per-message scope: each hook runs around every message, and one catch-all ends it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from advisor_worker.scope import Delivery, Middleware, Scope
from advisor_worker.shadow import ShadowGate
from advisor_worker.watchdog import EXIT_HARD_LIMIT, Watchdog
from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, queue_for, shadow_queue_for
from jobs.settings import Settings

JOB = "0b6c3b1e-2d0e-4a53-9d55-6b8f3f3a1c2e"


class Recorder(Middleware):
    """Writes down each hook it sees, in order."""

    def __init__(self, seen: list[str], name: str = "recorder") -> None:
        self.seen = seen
        self.name = name

    def before_message(self, delivery: Delivery) -> None:
        self.seen.append(f"{self.name}.before")

    def after_start(self, delivery: Delivery) -> None:
        self.seen.append(f"{self.name}.started")

    def after_message(self, delivery: Delivery, result: str) -> None:
        self.seen.append(f"{self.name}.after:{result}")


def scope_of(handler: object, hooks: list[Middleware], **kw: object) -> Scope:
    return Scope(handler, hooks, soft_limit=30.0, hard_limit=60.0, **kw)  # type: ignore[arg-type]


def test_hooks_run_before_in_order_and_after_in_reverse_around_the_handler() -> None:
    seen: list[str] = []

    def handler(delivery: Delivery) -> str:
        seen.append("handler")
        return "succeeded"

    scope = scope_of(handler, [Recorder(seen, "a"), Recorder(seen, "b")])
    assert scope.run(scope.delivery({"job_id": JOB})) == "succeeded"
    assert seen == ["a.before", "b.before", "handler", "b.after:succeeded", "a.after:succeeded"]


def test_a_message_whose_handler_raises_ends_as_error_and_the_next_message_is_served() -> None:
    seen: list[str] = []

    def handler(delivery: Delivery) -> str:
        if delivery.payload["n"] == 1:
            raise KeyError("mode")
        return "succeeded"

    scope = scope_of(handler, [Recorder(seen)])
    assert scope.run(scope.delivery({"job_id": JOB, "n": 1})) == "error"
    assert scope.run(scope.delivery({"job_id": JOB, "n": 2})) == "succeeded"
    # The after hooks ran for the failed message too (notices, heartbeat untracking).
    assert seen == ["recorder.before", "recorder.after:error",
                    "recorder.before", "recorder.after:succeeded"]  # fmt: skip


def test_the_catch_all_hands_a_started_job_to_on_error_and_survives_on_error_raising() -> None:
    verdicts: list[str] = []

    def handler(delivery: Delivery) -> str:
        delivery.start(object())  # type: ignore[arg-type]
        raise RuntimeError("Symlink loop from 'a'")

    def on_error(delivery: Delivery, exc: Exception) -> str:
        verdicts.append(f"{type(exc).__name__} with a current job: {delivery.job is not None}")
        if len(verdicts) > 1:
            raise ValueError("recording the failure failed too")
        return "internal"

    seen: list[str] = []
    scope = scope_of(handler, [Recorder(seen)], on_error=on_error)
    assert scope.run(scope.delivery({"job_id": JOB})) == "internal"
    assert scope.run(scope.delivery({"job_id": JOB})) == "error"
    assert verdicts == ["RuntimeError with a current job: True"] * 2
    assert seen.count("recorder.started") == 2


def test_a_hook_that_raises_before_the_handler_is_caught_and_only_entered_hooks_run_after() -> None:
    seen: list[str] = []

    class Broken(Middleware):
        def before_message(self, delivery: Delivery) -> None:
            raise OSError("broker away")

    scope = scope_of(lambda d: "succeeded", [Recorder(seen, "a"), Broken(), Recorder(seen, "b")])
    assert scope.run(scope.delivery({"job_id": JOB})) == "error"
    assert seen == ["a.before", "a.after:error"]


def test_the_message_soft_limit_only_shortens_the_configured_one() -> None:
    scope = scope_of(lambda d: "succeeded", [])
    assert scope.delivery({}, soft_limit=5.0).soft_limit == 5.0
    assert scope.delivery({}, soft_limit=500.0).soft_limit == 30.0
    assert scope.delivery({}, soft_limit=None).soft_limit == 30.0


def test_the_time_limit_hook_arms_each_message_with_the_watchdog_deadline_and_disarms_it() -> None:
    watchdog = Watchdog(5.0)  # never started: its deadline bookkeeping is what is checked
    during: list[float | None] = []

    def handler(delivery: Delivery) -> str:
        during.append(watchdog.deadline)
        assert watchdog.deadline == delivery.deadline
        raise RuntimeError("unexpected")

    scope = scope_of(handler, [watchdog])
    delivery = scope.delivery({"job_id": JOB})
    assert scope.run(delivery) == "error"
    assert during == [delivery.deadline]
    assert watchdog.deadline is None  # disarmed although the handler raised


HARD_LIMIT_SCRIPT = """
import sys, time
from advisor_worker.scope import Scope
from advisor_worker.watchdog import Watchdog
watchdog = Watchdog(0.5, poll_seconds=0.05)
watchdog.start()
scope = Scope(lambda d: time.sleep(float(sys.argv[1])) or "succeeded", [watchdog],
              soft_limit=0.4, hard_limit=0.5)
print(scope.run(scope.delivery({"job_id": "job-1"})), flush=True)
time.sleep(1.0)
print("still alive", flush=True)
"""


@pytest.mark.parametrize("seconds", [30.0, 0.1])
def test_a_message_past_the_hard_limit_ends_the_process_and_one_in_time_does_not(
    seconds: float,
) -> None:
    out = subprocess.run([sys.executable, "-c", HARD_LIMIT_SCRIPT, str(seconds)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    if seconds > 1:
        assert out.returncode == EXIT_HARD_LIMIT, out.stderr
        assert "Task job-1 ran past the hard time limit of 0.5s" in out.stderr
        assert "still alive" not in out.stdout
    else:
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["succeeded", "still", "alive"]


def test_a_shadow_message_yields_to_waiting_primary_jobs_before_any_other_hook(
    redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=redis_url)
    app = make_celery(settings, "test-shadow-gate")
    app.send_task(ANALYZE_TASK, kwargs={"job_id": "primary"}, queue=analyze_queue("base"))
    seen: list[str] = []
    handled: list[str] = []
    scope = scope_of(lambda d: handled.append("x") or "succeeded",
                     [ShadowGate(app, "base"), Recorder(seen)])  # fmt: skip
    shadow = {"version": 2, "job_id": JOB, "variant": "base"}
    info = {"routing_key": shadow_queue_for("base")}
    primary_info = {"routing_key": queue_for("base")}
    try:
        assert scope.run(scope.delivery(shadow, delivery_info=info)) == "yielded"
        assert (seen, handled) == ([], [])
        # Put back at the end of the shadow queue, the same request.
        client = redis.Redis.from_url(redis_url)
        assert client.llen(shadow_queue_for("base")) == 1
        # A primary message passes the gate whatever waits.
        assert scope.run(scope.delivery(shadow, delivery_info=primary_info)) == "succeeded"
        client.delete(queue_for("base"))  # nothing waits now: the shadow runs
        assert scope.run(scope.delivery(shadow, delivery_info=info)) == "succeeded"
        assert handled == ["x", "x"]
    finally:
        app.close()


def test_the_scope_and_its_hooks_load_no_mlx() -> None:
    # The Celery main thread and the hooks run without the model: only boot brings MLX in.
    code = (
        "import sys\n"
        "import advisor_worker.celery_app, advisor_worker.scope, advisor_worker.shadow\n"
        "import advisor_worker.watchdog, advisor_worker.heartbeat, advisor_worker.notices\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_vlm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "[]"
