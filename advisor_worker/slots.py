"""How many batch rows fit: each row holds a KV cache as long as its prompt plus its output."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from advisor_worker.errors import ModelLoadFailed

# mlx-lm's batch KV cache grows in steps of this many tokens.
KV_STEP_TOKENS = 256
# Of the memory found free, the share the KV caches may take (activations need the rest).
FREE_MEMORY_SHARE = 0.8
MIB = 1024 * 1024


@dataclass(frozen=True)
class SlotPlan:
    """The KV-cache arithmetic for B rows, in numbers a refusal can print."""

    slots: int
    tokens_per_row: int
    prompt_tokens: int
    output_tokens: int
    bytes_per_token: int
    budget_bytes: int
    budget_source: str

    @property
    def bytes_per_row(self) -> int:
        return self.bytes_per_token * self.tokens_per_row

    @property
    def rows_that_fit(self) -> int:
        return self.budget_bytes // self.bytes_per_row if self.bytes_per_row else self.slots

    @property
    def fits(self) -> bool:
        return self.slots <= self.rows_that_fit

    def refusal(self) -> str:
        return (
            f"ADVISOR_WORKER_BATCH={self.slots} needs {self.slots} x "
            f"{self.bytes_per_row / MIB:,.0f} MiB of KV cache ({self.tokens_per_row:,} tokens a "
            f"row: prompt {self.prompt_tokens:,} + output {self.output_tokens:,}), but the "
            f"budget is {self.budget_bytes / MIB:,.0f} MiB ({self.budget_source}); "
            f"{self.rows_that_fit} fit: lower ADVISOR_WORKER_BATCH or ADVISOR_MAX_OUTPUT_TOKENS, "
            "or raise ADVISOR_WORKER_MEMORY_MB"
        )


def kv_bytes_per_token(text_config: Any, dtype_bytes: int) -> int:
    """Keys and values of every layer for one token."""
    layers = int(_field(text_config, "num_hidden_layers"))
    heads = int(_field(text_config, "num_attention_heads"))
    kv_heads = int(_field(text_config, "num_key_value_heads", heads))
    head_dim = _field(text_config, "head_dim", None)
    if head_dim is None:
        head_dim = int(_field(text_config, "hidden_size")) // heads
    return 2 * layers * kv_heads * int(head_dim) * dtype_bytes


def plan_slots(
    *,
    slots: int,
    text_config: Any,
    dtype_bytes: int,
    prompt_tokens: int,
    output_tokens: int,
    budget_bytes: int,
    budget_source: str,
) -> SlotPlan:
    tokens = math.ceil((prompt_tokens + output_tokens) / KV_STEP_TOKENS) * KV_STEP_TOKENS
    return SlotPlan(
        slots=slots,
        tokens_per_row=tokens,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        bytes_per_token=kv_bytes_per_token(text_config, dtype_bytes),
        budget_bytes=budget_bytes,
        budget_source=budget_source,
    )


def memory_budget(configured_mb: int | None, *, metal_free_bytes: int | None) -> tuple[int, str]:
    """(bytes, where the number came from): the setting, else a share of the free memory."""
    if configured_mb is not None:
        return configured_mb * MIB, "ADVISOR_WORKER_MEMORY_MB"
    if metal_free_bytes is not None:
        free, source = metal_free_bytes, "of the GPU's recommended working set left after loading"
    else:
        free, source = _available_ram(), "of the RAM available after loading"
    return int(free * FREE_MEMORY_SHARE), f"{FREE_MEMORY_SHARE:.0%} {source}"


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError) as exc:
        raise ModelLoadFailed(
            "Cannot tell the free memory for the batch's KV caches; set ADVISOR_WORKER_MEMORY_MB"
        ) from exc


def _field(config: Any, name: str, *default: Any) -> Any:
    value = config.get(name, *default) if isinstance(config, dict) else None
    if not isinstance(config, dict):
        value = getattr(config, name, *default)
    return value
