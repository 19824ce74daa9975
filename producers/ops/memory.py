"""Memory for capacity plans: the host's, and one worker's per variant (measured or default)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
# A worker of a model only known by its hub id (the 4-bit 4B: ~2.5 GB of weights plus
# activations and KV cache for one request).
DEFAULT_MODEL_MEMORY_GB = 3.0
# A worker of a local checkpoint: its weight files plus the Python, MLX and KV-cache overhead.
WORKER_OVERHEAD_GB = 0.5
# Only when the host's memory cannot be read (the plan then says so).
DEFAULT_HOST_MEMORY_GB = 16.0


def host_memory_gb() -> float | None:
    """This host's physical memory: sysconf (Linux), `sysctl hw.memsize` (macOS); else None."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return pages * page_size / GB
    except (ValueError, OSError, AttributeError):
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5
            )
            return int(out.stdout.strip()) / GB
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GB
    except (OSError, ValueError, IndexError):
        pass
    return None


def worker_memory_gb(base_model: str) -> float:
    """One worker's memory for `base_model` when none was measured: a local checkpoint's
    weight files plus WORKER_OVERHEAD_GB; DEFAULT_MODEL_MEMORY_GB for a hub id."""
    path = Path(base_model).expanduser()
    weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not weights:
        return DEFAULT_MODEL_MEMORY_GB
    return sum(w.stat().st_size for w in weights) / GB + WORKER_OVERHEAD_GB


@dataclass(frozen=True)
class WorkerMemory:
    """One worker's memory for a variant, and where the figure came from."""

    gb: float
    source: str  # "measured" (workers' peak RSS), "checkpoint" or "default" (a hub id)
    workers: int = 0  # workers whose peak was measured

    @property
    def described(self) -> str:
        if self.source == "measured":
            return f"measured: the largest peak RSS of {self.workers} worker(s)"
        if self.source == "checkpoint":
            return f"not measured: checkpoint files + {WORKER_OVERHEAD_GB:g} GB"
        return f"not measured: {DEFAULT_MODEL_MEMORY_GB:g} GB default for a hub model"


def worker_memory(base_model: str, measured: tuple[float, int] | None) -> WorkerMemory:
    """The workers' measured peak (MB, workers) when they reported one, else the default."""
    if measured is not None:
        peak_mb, workers = measured
        return WorkerMemory(peak_mb * 1024 * 1024 / GB, "measured", workers)
    gb = worker_memory_gb(base_model)
    return WorkerMemory(gb, "default" if gb == DEFAULT_MODEL_MEMORY_GB else "checkpoint")
