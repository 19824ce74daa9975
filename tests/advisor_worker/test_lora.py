"""LoRA adapters on the real tiny Qwen3-VL under MLX: formats, serving, fingerprint.

Adapters refused for their files or tensors: test_lora_refusals.py."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")

from mlx_vlm import load  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from advisor_worker import generation, lora  # noqa: E402
from advisor_worker.devtools.adapter_maker import write_random_adapter  # noqa: E402
from advisor_worker.errors import AdapterInvalid  # noqa: E402
from jobs.variants import Variant  # noqa: E402
from tests.advisor_worker.lora_probes import (  # noqa: E402
    adapted_logits,
    max_diff,
    refusal,
)

# fp32 on the CPU: fused (W + scale * B @ A) and unfused differ by rounding only (~2e-6 seen).
FUSED_ATOL = 1e-4


@pytest.mark.parametrize("fmt", ["mlx", "mlx-flat", "mlx-lm", "peft"])
def test_every_format_loads_and_changes_the_output(
    fmt: str, fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / fmt, fmt=fmt, seed=1)
    model, processor = fresh()
    report = lora.verify_and_apply(model, processor, adapter, base_model=str(tiny_model_dir))
    # q_proj and v_proj in both decoder layers: 4 modules, an A and a B each.
    assert (report.modules, report.tensors) == (4, 8)
    assert report.probe_effect > 0.01
    assert max_diff(generation.probe_logits(model, processor), base_logits) > 0.01


@pytest.mark.parametrize("fmt", ["mlx", "peft"])
def test_fused_and_unfused_give_the_same_logits(
    fmt: str, fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(
        tiny_model_dir, tmp_path / fmt, fmt=fmt, seed=2, targets=("q_proj", "o_proj", "down_proj")
    )
    unfused = adapted_logits(fresh, adapter, tiny_model_dir, "unfused")
    fused = adapted_logits(fresh, adapter, tiny_model_dir, "fused")
    assert max_diff(unfused, fused) < FUSED_ATOL
    assert max_diff(fused, base_logits) > 0.01


@pytest.mark.parametrize("fmt", ["mlx", "mlx-flat"])
def test_mlx_format_reads_exactly_as_mlx_vlms_own_adapter_loading(
    fmt: str, fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / fmt, fmt=fmt, seed=3)
    ours = adapted_logits(fresh, adapter, tiny_model_dir)
    model, processor = load(str(tiny_model_dir), adapter_path=str(adapter))
    assert max_diff(ours, generation.probe_logits(model, processor)) < 1e-6


def test_a_peft_adapter_and_the_same_weights_in_mlx_format_give_the_same_logits(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    peft = write_random_adapter(tiny_model_dir, tmp_path / "peft", fmt="peft", seed=4)
    mlx = write_random_adapter(tiny_model_dir, tmp_path / "mlx", fmt="mlx", seed=4)
    assert (
        load_file(str(peft / "adapter_model.safetensors")).keys()
        != load_file(str(mlx / "adapters.safetensors")).keys()
    )
    peft_logits = adapted_logits(fresh, peft, tiny_model_dir)
    mlx_logits = adapted_logits(fresh, mlx, tiny_model_dir)
    assert max_diff(peft_logits, mlx_logits) < 1e-6


def test_mlx_lm_config_with_block_relative_keys_matches_mlx_vlms_shape(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    mlx_lm = write_random_adapter(tiny_model_dir, tmp_path / "lm", fmt="mlx-lm", seed=5)
    config = json.loads((mlx_lm / "adapter_config.json").read_text())
    assert config["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    mlx = write_random_adapter(tiny_model_dir, tmp_path / "vlm", fmt="mlx", seed=5)
    assert (
        max_diff(
            adapted_logits(fresh, mlx_lm, tiny_model_dir),
            adapted_logits(fresh, mlx, tiny_model_dir),
        )
        < 1e-6
    )


def test_rslora_scales_the_update_by_alpha_over_the_square_root_of_rank(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    rs = write_random_adapter(
        tiny_model_dir, tmp_path / "rs", fmt="peft", rank=4, alpha=8, seed=6, use_rslora=True
    )
    assert {lw.scale for lw in lora.read_adapter(rs).layers} == {4.0}  # 8 / sqrt(4)
    # The same tensors in mlx-vlm format with that scale written out give the same logits.
    mlx = write_random_adapter(tiny_model_dir, tmp_path / "mlx", fmt="mlx", rank=4, alpha=8, seed=6)
    config = json.loads((mlx / "adapter_config.json").read_text())
    assert config["lora_parameters"]["scale"] == 2.0  # plain LoRA: 8 / 4
    config["lora_parameters"]["scale"] = 4.0
    (mlx / "adapter_config.json").write_text(json.dumps(config))
    rs_logits = adapted_logits(fresh, rs, tiny_model_dir)
    assert max_diff(rs_logits, adapted_logits(fresh, mlx, tiny_model_dir)) < 1e-6
    plain = write_random_adapter(
        tiny_model_dir, tmp_path / "plain", fmt="peft", rank=4, alpha=8, seed=6
    )
    assert max_diff(rs_logits, adapted_logits(fresh, plain, tiny_model_dir)) > 0.01


def test_a_zero_b_adapter_equals_base_exactly_and_is_refused_as_having_no_effect(
    fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "zero", fmt="peft", zero_b=True)
    for serving in ("unfused", "fused"):
        model, processor = fresh()
        assert lora.apply_adapter(model, lora.read_adapter(adapter), serving=serving) == 8
        assert bool(mx.array_equal(generation.probe_logits(model, processor), base_logits))
    message = refusal(fresh, adapter, tiny_model_dir)
    assert "has no effect" in message and "every B matrix is zero" in message


def test_a_vision_tower_adapter_is_seen_by_the_image_probe(
    fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(
        tiny_model_dir, tmp_path / "vis", fmt="peft", targets=("attn.qkv",)
    )
    logits = adapted_logits(fresh, adapter, tiny_model_dir)
    assert max_diff(logits, base_logits) > lora.MIN_PROBE_EFFECT


def test_a_quantized_base_serves_unfused_as_mlx_vlm_does_and_refuses_fused(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from mlx_vlm.trainer.peft.utils import apply_lora_layers

    def quantized() -> tuple[Any, Any]:
        model, processor = fresh()
        nn.quantize(
            model,
            group_size=64,
            bits=4,
            class_predicate=lambda path, m: (
                path.startswith("language_model.model.layers") and isinstance(m, nn.Linear)
            ),
        )
        return model, processor

    adapter = write_random_adapter(tiny_model_dir, tmp_path / "q", fmt="mlx", seed=7)
    model, processor = quantized()
    base = generation.probe_logits(model, processor)
    lora.verify_and_apply(model, processor, adapter, base_model=str(tiny_model_dir))
    ours = generation.probe_logits(model, processor)
    theirs_model, theirs_processor = quantized()
    apply_lora_layers(theirs_model, adapter)
    assert max_diff(ours, generation.probe_logits(theirs_model, theirs_processor)) < 1e-6
    assert max_diff(ours, base) > 0.01

    model, processor = quantized()
    with pytest.raises(AdapterInvalid, match="4-bit quantized.*serve this variant 'unfused'"):
        lora.verify_and_apply(
            model, processor, adapter, base_model=str(tiny_model_dir), serving="fused"
        )
    # Refused before anything changed.
    assert bool(mx.array_equal(generation.probe_logits(model, processor), base))


def test_a_base_model_name_mismatch_warns_but_serves_when_shapes_fit(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="peft", seed=8)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen3-VL-4B-Instruct"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    model, processor = fresh()
    with caplog.at_level(logging.WARNING, logger="advisor_worker.lora"):
        report = lora.verify_and_apply(model, processor, adapter, base_model=str(tiny_model_dir))
    assert len(report.warnings) == 1 and "'Qwen/Qwen3-VL-4B-Instruct'" in report.warnings[0]
    assert report.warnings[0] in caplog.text
    # A hub conversion of the same model is not a mismatch.
    model, processor = fresh()
    report = lora.verify_and_apply(
        model, processor, adapter, base_model="mlx-community/Qwen3-VL-4B-Instruct-4bit"
    )
    assert report.warnings == ()


def test_apply_verified_serves_the_variants_mode_and_returns_the_fingerprint(
    fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="peft", seed=9)
    variant = Variant("fine_tuned", str(tiny_model_dir), adapter, serving="fused")
    model, processor = fresh()
    assert lora.apply_verified(model, processor, variant) == lora.adapter_fingerprint(adapter)
    assert not any(isinstance(m, lora.LoRALinear) for _, m in model.named_modules())
    assert max_diff(generation.probe_logits(model, processor), base_logits) > 0.01


def test_a_variant_pinned_to_another_fingerprint_is_refused(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="mlx", seed=12)
    actual = lora.adapter_fingerprint(adapter)
    pinned = Variant("fine_tuned", str(tiny_model_dir), adapter, fingerprint="0" * 64)
    model, processor = fresh()
    with pytest.raises(AdapterInvalid, match=f"has fingerprint {actual}, but the registry pins 0+"):
        lora.apply_verified(model, processor, pinned)
    model, processor = fresh()
    right = Variant("fine_tuned", str(tiny_model_dir), adapter, fingerprint=actual)
    assert lora.apply_verified(model, processor, right) == actual


def test_the_fingerprint_is_the_sha256_of_config_then_weights_and_tracks_every_byte(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="mlx", seed=10)
    again = write_random_adapter(tiny_model_dir, tmp_path / "b", fmt="mlx", seed=10)
    fingerprint = lora.adapter_fingerprint(first)
    expected = hashlib.sha256(
        (first / "adapter_config.json").read_bytes() + (first / "adapters.safetensors").read_bytes()
    ).hexdigest()
    assert fingerprint == expected == lora.adapter_fingerprint(again)
    assert lora.read_adapter(first).fingerprint == fingerprint
    weights = bytearray((first / "adapters.safetensors").read_bytes())
    weights[-1] ^= 0x01  # one bit of one float
    (first / "adapters.safetensors").write_bytes(bytes(weights))
    assert lora.adapter_fingerprint(first) != fingerprint
    other_seed = write_random_adapter(tiny_model_dir, tmp_path / "c", fmt="mlx", seed=11)
    assert lora.adapter_fingerprint(other_seed) != fingerprint
