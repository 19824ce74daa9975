"""A text progress bar for a job, fed by its row's `progress` (output tokens so far)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from store.models import Job


class ProgressBar:
    """Redraws in place on a terminal; elsewhere writes a line only when the status changes."""

    def __init__(self, total_tokens: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total_tokens)
        self.stream = stream or sys.stderr
        self.width = width
        self.is_tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_status: str | None = None
        self._drawn = False

    def render(self, job: Job) -> str:
        elapsed = time.monotonic() - self.started
        tokens = job.progress or 0
        filled = min(self.width, self.width * tokens // self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        where = f"{job.variant} ({job.assignment})"
        if job.status == "queued":
            waiting = "not yet published" if job.published_at is None else "in queue"
            return f"{job.id[:8]} queued {waiting} for {where}  {elapsed:5.1f}s"
        return f"{job.id[:8]} {job.status:<9} [{bar}] {tokens:>5} tok  {where}  {elapsed:5.1f}s"

    def update(self, job: Job) -> None:
        if self.is_tty:
            self.stream.write("\r\x1b[2K" + self.render(job))
            self._drawn = True
        elif job.status != self._last_status:
            self.stream.write(self.render(job) + "\n")
        self._last_status = job.status
        self.stream.flush()

    def finish(self) -> None:
        if self.is_tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
