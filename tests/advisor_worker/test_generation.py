"""generate_json and probe_logits on the tiny random Qwen3-VL, for real on the CPU."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_vlm.models.qwen3_vl.processing_qwen3_vl import Qwen3VLImageProcessor
from mlx_vlm.utils import estimate_num_image_tokens
from PIL import Image

from advisor_worker.batching import generate_json
from advisor_worker.generation import model_geometry, probe_image, probe_logits
from jobs.analysis import generation_schema
from jobs.errors import ConfigError
from photos.intake import ModelGeometry, fit_for_model, image_tokens

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


def test_the_model_geometry_is_the_setting_within_the_processors_limits(
    tiny_model: tuple[Any, Any],
) -> None:
    _, processor = tiny_model

    # The tiny checkpoint's processor: 16-px patches merged 2x2, 4096 to 65536 pixels.
    assert model_geometry(processor, 448 * 448) == ModelGeometry(65_536, 32, 4_096)
    assert model_geometry(processor, 128 * 128) == ModelGeometry(16_384, 32, 4_096)
    with pytest.raises(ConfigError, match="ADVISOR_MODEL_IMAGE_PIXELS=1024 is below"):
        model_geometry(processor, 32 * 32)


def test_only_a_chosen_pixel_budget_above_the_models_maximum_is_warned_about(
    tiny_model: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    _, processor = tiny_model
    with caplog.at_level(logging.INFO, logger="advisor_worker.generation"):
        model_geometry(processor, 448 * 448, chosen=False)
        assert [r.levelname for r in caplog.records] == ["INFO"]
        assert "at most 65536 pixels" in caplog.text and "exceeds" not in caplog.text
        caplog.clear()
        model_geometry(processor, 448 * 448)
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "ADVISOR_MODEL_IMAGE_PIXELS=200704 exceeds this model's maximum of 65536" in caplog.text


@pytest.mark.parametrize(
    "size", [(448, 448), (4032, 3024), (3024, 4032), (97, 65), (80, 60), (5000, 30)]
)
def test_intake_sizes_pass_the_processor_unchanged_at_one_token_per_32_pixels(
    tiny_model: tuple[Any, Any], size: tuple[int, int]
) -> None:
    _, processor = tiny_model
    geometry = model_geometry(processor, 448 * 448)
    image = fit_for_model(Image.new("RGB", size, (90, 30, 60)), geometry)
    width, height = image.size

    grid = processor.image_processor(images=[image])["image_grid_thw"].tolist()

    assert grid == [[1, height // 16, width // 16]]  # the processor did not resize it
    tokens = image_tokens(width, height, geometry)
    assert tokens == grid[0][1] * grid[0][2] // 4 == width * height // 1024
    assert tokens == estimate_num_image_tokens(processor, height, width)


@pytest.mark.parametrize(("size", "tokens"), [((448, 448), 196), ((4032, 3024), 192)])
def test_the_default_budget_costs_about_196_tokens_on_qwen3_vls_own_processor_settings(
    size: tuple[int, int], tokens: int
) -> None:
    # Qwen3-VL-4B's preprocessor_config: 16-px patches, merge 2, 65,536 to 16,777,216 pixels.
    real = SimpleNamespace(image_processor=Qwen3VLImageProcessor(
        patch_size=16, merge_size=2, min_pixels=65_536, max_pixels=16_777_216
    ))  # fmt: skip
    geometry = model_geometry(real, 448 * 448)
    image = fit_for_model(Image.new("RGB", size), geometry)

    grid = real.image_processor(images=[image])["image_grid_thw"].tolist()

    assert grid == [[1, image.height // 16, image.width // 16]]
    assert image_tokens(*image.size, geometry) == grid[0][1] * grid[0][2] // 4 == tokens


def test_the_prompt_grows_by_exactly_the_image_tokens(tiny_model: tuple[Any, Any]) -> None:
    _, processor = tiny_model
    full, small = model_geometry(processor, 448 * 448), ModelGeometry(64 * 64, 32, 4_096)
    big = run(tiny_model, image=fit_for_model(noise_image(2, 320, 320), full), max_tokens=1)
    capped = run(tiny_model, image=fit_for_model(noise_image(2, 320, 320), small), max_tokens=1)

    # 256x256 is the tiny checkpoint's cap (64 tokens); 64x64 is 4.
    assert big.prompt_tokens - capped.prompt_tokens == 64 - 4


def test_probe_logits_are_one_float32_row_over_the_vocabulary(
    tiny_model: tuple[Any, Any],
) -> None:
    model, processor = tiny_model

    logits = probe_logits(model, processor)

    # One logit per embedding row, past the tokenizer's ids (151,936 and 151,669 at the
    # real shape; 8,320 and 8,218 in the suite's cut).
    assert logits.shape == (model.config.text_config.vocab_size,) == (8_320,)
    assert logits.shape[0] > len(processor.tokenizer)
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
