"""ADVISOR_PLAN_HOOK: an operator's command run after each plan step, to resize the queues.

It runs on its own thread with a timeout; its failure is logged and never blocks the guard.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import threading

from jobs.settings import Settings
from producers.plans import Plan

logger = logging.getLogger(__name__)


def hook_environment(plan: Plan, workers: dict[str, int]) -> dict[str, str]:
    """What the hook is told: the plan's advisor, candidate, step and workers per variant."""
    env = {
        "ADVISOR_PLAN_ADVISOR": plan.advisor,
        "ADVISOR_PLAN_VARIANT": plan.variant,
        "ADVISOR_PLAN_STEP": f"{plan.percent:g}",
        "ADVISOR_PLAN_STATUS": plan.status.value,
        "ADVISOR_PLAN_WORKERS": json.dumps(workers, sort_keys=True),
    }
    for variant, n in workers.items():
        env[f"ADVISOR_PLAN_WORKERS_{variant.upper().replace('-', '_')}"] = str(n)
    return env


class PlanHook:
    """Calls `command` (split like a shell would, run without one) for each step."""

    def __init__(self, command: str, timeout: float) -> None:
        self.argv = shlex.split(command)
        self.timeout = timeout
        self._threads: list[threading.Thread] = []

    def __call__(self, plan: Plan, workers: dict[str, int]) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(plan, workers), name="plan-hook", daemon=True
        )
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return thread

    def wait(self) -> None:
        """Before a short-lived process exits: its hooks finish (or time out) first."""
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _run(self, plan: Plan, workers: dict[str, int]) -> None:
        # The child inherits this process's environment (PATH, credentials it may need).
        env = {**os.environ, **hook_environment(plan, workers)}
        what = f"plan hook for {plan.advisor} at {plan.percent:g}%"
        try:
            done = subprocess.run(
                self.argv, env=env, timeout=self.timeout, capture_output=True, text=True,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            logger.error("%s: no exit within %gs; killed", what, self.timeout)
            return
        except OSError as exc:
            logger.error("%s: could not run %r: %s", what, self.argv[0], exc)
            return
        if done.returncode != 0:
            logger.error("%s: exit %d: %s", what, done.returncode, done.stderr.strip()[-500:])
        else:
            logger.info("%s: ok (workers %s)", what, workers)


def hook_for(settings: Settings) -> PlanHook | None:
    """ADVISOR_PLAN_HOOK as a hook, or None when it is not set."""
    if not settings.plan_hook:
        return None
    return PlanHook(settings.plan_hook, settings.plan_hook_timeout)
