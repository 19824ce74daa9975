"""The KV-cache arithmetic behind ADVISOR_WORKER_BATCH, and a worker refusing a B that won't fit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from advisor_worker.slots import MIB, kv_bytes_per_token, memory_budget, plan_slots
from tests.advisor_worker.test_worker_e2e import setup_env
from tests.support import WORKER_BIN

# Qwen3-VL-4B's text model: 36 layers, 8 KV heads of 128.
QWEN3_VL_4B = {"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
               "head_dim": 128, "hidden_size": 2560}  # fmt: skip


def test_a_row_of_the_4b_model_costs_keys_and_values_of_every_layer_per_token() -> None:
    assert kv_bytes_per_token(QWEN3_VL_4B, 2) == 2 * 36 * 8 * 128 * 2  # 144 KiB
    # Without head_dim the width is hidden_size / heads.
    assert kv_bytes_per_token({**QWEN3_VL_4B, "head_dim": None}, 2) == 2 * 36 * 8 * 80 * 2


def test_the_plan_rounds_rows_up_to_the_caches_step_and_counts_what_fits() -> None:
    plan = plan_slots(slots=8, text_config=QWEN3_VL_4B, dtype_bytes=2, prompt_tokens=400,
                      output_tokens=2400, budget_bytes=2048 * MIB, budget_source="t")  # fmt: skip
    assert plan.tokens_per_row == 2816  # 2,800 rounded up to 11 steps of 256
    assert plan.bytes_per_row == 147_456 * 2816
    assert plan.rows_that_fit == 5 and not plan.fits
    refusal = plan.refusal()
    assert "ADVISOR_WORKER_BATCH=8 needs 8 x 396 MiB" in refusal
    assert "prompt 400 + output 2,400" in refusal and "5 fit" in refusal
    assert plan_slots(
        slots=4,
        text_config=QWEN3_VL_4B,
        dtype_bytes=2,
        prompt_tokens=400,
        output_tokens=2400,
        budget_bytes=2048 * MIB,
        budget_source="t",
    ).fits


def test_the_budget_is_the_setting_else_a_share_of_what_is_free() -> None:
    assert memory_budget(512, metal_free_bytes=None) == (512 * MIB, "ADVISOR_WORKER_MEMORY_MB")
    budget, source = memory_budget(None, metal_free_bytes=10 * 1024 * MIB)
    assert budget == 8 * 1024 * MIB and "GPU" in source
    ram, where = memory_budget(None, metal_free_bytes=None)
    assert ram > 0 and "RAM" in where


@pytest.mark.slow
def test_a_worker_refuses_in_one_line_a_batch_its_memory_budget_cannot_hold(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = setup_env(tmp_path, tiny_model_dir, f"sqlite:///{tmp_path / 'a.db'}",
                    f"sqla+sqlite:///{tmp_path / 'b.db'}")  # fmt: skip
    env.values.update({"ADVISOR_WORKER_BATCH": "64", "ADVISOR_WORKER_MEMORY_MB": "1"})
    out = subprocess.run([*WORKER_BIN, "run", "--variant", "base"], env=env.full(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    [line] = [x for x in out.stderr.splitlines() if x.startswith("advisor-worker:")]
    assert "ADVISOR_WORKER_BATCH=64 needs 64 x" in line and "ADVISOR_WORKER_MEMORY_MB" in line
    assert "Traceback" not in out.stderr
