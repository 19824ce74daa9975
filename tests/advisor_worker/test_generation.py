"""generate_json and probe_logits on the tiny random Qwen3-VL, for real on the CPU."""

from __future__ import annotations

import json
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from advisor_worker.generation import cap_pixels, generate_json, probe_image, probe_logits
from jobs.analysis import generation_schema

SCHEMA = generation_schema(text_limit=8)


def noise_image(seed: int, width: int = 80, height: int = 60) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def run(tiny_model: tuple[Any, Any], **overrides: Any) -> Any:
    model, processor = tiny_model
    options: dict[str, Any] = {"max_tokens": 1500, "temperature": 1.0, "seed": 11}
    options.update(overrides)
    image = options.pop("image", noise_image(0))
    return generate_json(model, processor, image, "System.", "Critique.", SCHEMA, **options)


def test_the_same_seed_reproduces_the_same_text(tiny_model: tuple[Any, Any]) -> None:
    first = run(tiny_model, seed=7)
    again = run(tiny_model, seed=7)
    other = run(tiny_model, seed=8)

    assert first.text == again.text
    assert other.text != first.text


def test_running_out_of_tokens_is_reported_as_length(tiny_model: tuple[Any, Any]) -> None:
    result = run(tiny_model, max_tokens=20)

    assert result.finish_reason == "length"
    assert result.output_tokens == 20
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.text)


def test_a_finished_generation_reports_its_counts_and_speed(tiny_model: tuple[Any, Any]) -> None:
    seen: list[int] = []

    result = run(tiny_model, on_progress=seen.append)

    assert result.finish_reason == "stop"
    assert seen == list(range(1, result.output_tokens + 1))
    # The prompt holds the text plus 80x60 pixels -> 96x64 after rounding -> 6 image tokens.
    assert result.prompt_tokens > 6
    assert result.seconds > 0 and result.tokens_per_second > 0


def test_greedy_decoding_ignores_the_seed(tiny_model: tuple[Any, Any]) -> None:
    assert run(tiny_model, temperature=0.0, seed=1).text == run(tiny_model, temperature=0.0).text


def test_large_images_are_scaled_down_to_the_pixel_cap() -> None:
    capped = cap_pixels(Image.new("L", (4000, 3000)), max_pixels=448 * 448)

    assert capped.mode == "RGB"
    assert capped.width * capped.height <= 448 * 448
    assert abs(capped.width / capped.height - 4 / 3) < 0.01


def test_small_images_are_left_alone() -> None:
    image = noise_image(1)

    assert cap_pixels(image, max_pixels=448 * 448) is image


def test_the_pixel_cap_bounds_the_prompt(tiny_model: tuple[Any, Any]) -> None:
    big = run(tiny_model, image=noise_image(2, 320, 320), max_tokens=1, max_pixels=320 * 320)
    capped = run(tiny_model, image=noise_image(2, 320, 320), max_tokens=1, max_pixels=64 * 64)

    # 64x64 pixels is 4 image tokens; the checkpoint's own cap (65536 pixels) allows 64.
    assert big.prompt_tokens - capped.prompt_tokens == 64 - 4


def test_probe_logits_are_one_float32_row_over_the_vocabulary(
    tiny_model: tuple[Any, Any],
) -> None:
    model, processor = tiny_model

    logits = probe_logits(model, processor)

    assert logits.shape == (len(processor.tokenizer),)
    assert logits.dtype == mx.float32
    assert bool(mx.all(mx.isfinite(logits)))
    assert float(logits.std()) > 0.1


def test_probe_logits_are_identical_across_calls(tiny_model: tuple[Any, Any]) -> None:
    model, processor = tiny_model

    assert mx.array_equal(probe_logits(model, processor), probe_logits(model, processor))


def test_probe_logits_change_when_a_weight_changes(tiny_model: tuple[Any, Any]) -> None:
    model, processor = tiny_model
    layer = model.language_model.model.layers[0].mlp.down_proj
    original = layer.weight
    base = probe_logits(model, processor)
    try:
        layer.weight = original * 1.5
        changed = probe_logits(model, processor)
    finally:
        layer.weight = original

    assert not mx.allclose(base, changed)
    assert mx.array_equal(probe_logits(model, processor), base)


def test_the_probe_image_is_fixed() -> None:
    assert np.array_equal(np.asarray(probe_image()), np.asarray(probe_image()))
    assert probe_image().size == (64, 64)
