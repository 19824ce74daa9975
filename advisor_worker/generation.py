"""One constrained generation: system prompt, user text and an image in; schema-bound JSON out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_vlm import stream_generate
from mlx_vlm.prompt_utils import apply_chat_template
from mlx_vlm.utils import prepare_inputs
from PIL import Image

from advisor_worker.errors import GenerationTimeout, ModelLoadFailed, WorkerError
from advisor_worker.structured import json_schema_constraint
from jobs.errors import ConfigError
from photos.intake import ModelGeometry

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationResult",
    "build_prompt",
    "generate_json",
    "model_geometry",
    "probe_image",
    "probe_logits",
]

_PROBE_SYSTEM = "You are a photography advisor."
_PROBE_TEXT = "Describe the light in this photograph in one sentence."


@dataclass(frozen=True)
class GenerationResult:
    """What one generation produced and what it cost."""

    text: str
    prompt_tokens: int
    # Sampled tokens, counting the closing EOS when finish_reason is "stop".
    output_tokens: int
    finish_reason: Literal["stop", "length"]
    # Wall time of the whole call: image encoding, prefill and decoding.
    seconds: float
    # Decoding rate alone, as mlx-vlm measures it (prefill excluded).
    tokens_per_second: float


def generate_json(
    model: nn.Module,
    processor: Any,
    image: Image.Image,
    system_prompt: str,
    user_text: str,
    schema: dict[str, Any],
    *,
    max_tokens: int,
    temperature: float,
    seed: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
) -> GenerationResult:
    """Generate text constrained to `schema` about `image`; the one call the worker makes.

    `image` is the model's input as intake made it (photos.intake.prepare: RGB, sRGB, upright,
    sized by model_geometry), so the processor passes it through unresized.

    Run it on the thread that loaded the model (MLX streams are thread-local). `temperature`
    is required so the checkpoint's generation_config cannot choose it silently; `top_p` and
    `top_k` left at None do come from there. `on_progress` gets the output token count after
    each token: keep it cheap. "length" means `max_tokens` ran out before the JSON closed.
    `should_stop` is asked before decoding and after every token; when it says so,
    GenerationTimeout carries the partial text out.
    """
    prompt = build_prompt(model, processor, system_prompt, user_text)
    constraint = json_schema_constraint(processor.tokenizer, schema)
    options: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        # One processor per request: it carries this generation's grammar state.
        "logits_processors": [constraint.new_processor()],
    }
    if seed is not None:
        mx.random.seed(seed)
        # mlx-vlm then draws each position's sample from its own key: reproducible per seed.
        options["seed"] = seed
    if top_p is not None:
        options["top_p"] = top_p
    if top_k is not None:
        options["top_k"] = top_k

    started = time.perf_counter()
    pieces: list[str] = []
    last = None
    reported = 0
    # mlx-vlm annotates `image` as paths but takes PIL images too (utils.process_image).
    images: list[Any] = [image]
    if should_stop is not None and should_stop():
        raise GenerationTimeout("Time ran out before decoding started", "", 0)
    stream = stream_generate(model, processor, prompt, image=images, **options)
    try:
        for response in stream:
            pieces.append(response.text)
            last = response
            if on_progress is not None and response.generation_tokens > reported:
                reported = response.generation_tokens
                on_progress(reported)
            if should_stop is not None and should_stop():
                tokens = int(response.generation_tokens)
                raise GenerationTimeout(
                    f"Time ran out after {tokens} output tokens "
                    f"({time.perf_counter() - started:.1f}s)",
                    "".join(pieces),
                    tokens,
                )
    finally:
        # Closing the generator now (not at garbage collection) ends mlx-vlm's decoding loop.
        stream.close()
    seconds = time.perf_counter() - started
    if last is None:
        raise WorkerError("mlx-vlm's stream_generate yielded nothing")
    finish_reason: Literal["stop", "length"] = "stop" if last.finish_reason == "stop" else "length"
    result = GenerationResult(
        text="".join(pieces),
        prompt_tokens=int(last.prompt_tokens),
        output_tokens=int(last.generation_tokens),
        finish_reason=finish_reason,
        seconds=seconds,
        tokens_per_second=float(last.generation_tps),
    )
    logger.debug(
        "Generated %d tokens (%s) after a %d-token prompt in %.2f s (%.1f tok/s)",
        result.output_tokens,
        result.finish_reason,
        result.prompt_tokens,
        result.seconds,
        result.tokens_per_second,
    )
    return result


def build_prompt(model: nn.Module, processor: Any, system_prompt: str, user_text: str) -> str:
    """The chat-templated prompt with one image slot, which the processor expands to tokens."""
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_text},
    ]
    return str(apply_chat_template(processor, model.config, messages, num_images=1))


def model_geometry(processor: Any, pixel_budget: int, *, chosen: bool = True) -> ModelGeometry:
    """The image sizes this model's processor keeps as they are, within ADVISOR_MODEL_IMAGE_PIXELS.

    `chosen`: the budget was set by the user (a default above the model's maximum is no news).

    Qwen-VL processors resize to multiples of patch x merge pixels between their own min and
    max; intake sizes images that way, so what it saves is exactly what the model sees.
    """
    images = getattr(processor, "image_processor", None)
    try:
        factor = int(images.patch_size) * int(images.merge_size)  # type: ignore[union-attr]
        low, high = int(images.min_pixels), int(images.max_pixels)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError) as exc:
        raise ModelLoadFailed(
            f"The model's image processor ({type(images).__name__}) does not state its patch "
            "size, merge size and min/max pixels; only Qwen-VL-style processors are supported"
        ) from exc
    if pixel_budget < low:
        raise ConfigError(
            f"ADVISOR_MODEL_IMAGE_PIXELS={pixel_budget} is below this model's minimum of {low} "
            "pixels per image; raise it"
        )
    if pixel_budget > high and chosen:
        logger.warning(
            "ADVISOR_MODEL_IMAGE_PIXELS=%d exceeds this model's maximum of %d pixels per "
            "image; images get at most %d",
            pixel_budget,
            high,
            high,
        )
    elif pixel_budget > high:
        # The default budget suits the real model; a smaller one simply takes less.
        logger.info("Images get at most %d pixels, this model's maximum", high)
    return ModelGeometry(min(pixel_budget, high), factor, low)


def probe_image() -> Image.Image:
    """A fixed 64x64 colour gradient: the same pixels in every process."""
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    red, green = np.meshgrid(ramp, ramp[::-1])
    blue = np.full_like(red, 96.0)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def probe_logits(model: nn.Module, processor: Any) -> mx.array:
    """Next-token logits (float32, shape (vocab,)) for a fixed image and prompt.

    One forward pass, no sampling: comparing it between a base and an adapted model shows
    whether an adapter changed anything.
    """
    prompt = build_prompt(model, processor, _PROBE_SYSTEM, _PROBE_TEXT)
    inputs = prepare_inputs(
        processor,
        images=[probe_image()],
        prompts=prompt,
        image_token_index=getattr(model.config, "image_token_index", None),
    )
    extra = {
        key: value
        for key, value in inputs.items()
        if key not in ("input_ids", "pixel_values", "attention_mask")
    }
    output = model(inputs["input_ids"], inputs["pixel_values"], **extra)
    logits = output.logits[0, -1].astype(mx.float32)
    mx.eval(logits)
    return logits
