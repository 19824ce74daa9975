"""Outcome notices from the worker: handed off by the message threads, sent on a thread of its own.

Neither the MLX thread nor a message thread waits for a receiver: a message thread hands
the job id over once the outcome is committed and goes on. A notice this thread never
sends (the process died, the receiver was down) stays due in the outbox for the sweep.
"""

from __future__ import annotations

import logging
import queue
import threading

from advisor_worker.scope import Delivery, Middleware
from notices.courier import Courier

logger = logging.getLogger(__name__)


class NoticeThread(Middleware):
    """Sends the due notices of each job handed to it, one job at a time, in order."""

    def __init__(self, courier: Courier) -> None:
        self.courier = courier
        self._jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="notices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hand_off(self, job_id: str) -> None:
        self._jobs.put(job_id)

    def after_message(self, delivery: Delivery, result: str) -> None:
        # Whatever ended the job (or ended it earlier, if its notices are still due).
        if delivery.job_id is not None:
            self.hand_off(delivery.job_id)

    def _run(self) -> None:
        while (job_id := self._jobs.get()) is not None:
            try:
                self.courier.deliver_job(job_id)
            except Exception:  # noqa: BLE001 - nothing here may stop the worker; the sweep resends
                logger.exception("Notices of job %s not sent here; the sweep sends them", job_id)

    def stop(self, timeout: float) -> None:
        """Send what was handed over (up to `timeout` seconds), then close the courier."""
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("Notices still sending after %.0fs; the sweep sends what is left",
                           timeout)  # fmt: skip
        self.courier.close()
