"""What a generation takes and gives: the prompt, its embedding, the result, the image geometry.

The decoding itself is advisor_worker.batching's: every job, alone or not, is a row of a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_vlm.prompt_utils import apply_chat_template
from mlx_vlm.utils import prepare_inputs
from PIL import Image

from advisor_worker.errors import ModelLoadFailed
from jobs.errors import ConfigError
from photos.intake import ModelGeometry

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationResult",
    "build_prompt",
    "embed_prompt",
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
    # Wall time from joining the batch to the last token: image encoding, prefill, decoding.
    seconds: float
    # Output tokens over `seconds`.
    tokens_per_second: float


def build_prompt(model: nn.Module, processor: Any, system_prompt: str, user_text: str) -> str:
    """The chat-templated prompt with one image slot, which the processor expands to tokens."""
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_text},
    ]
    return str(apply_chat_template(processor, model.config, messages, num_images=1))


def embed_prompt(
    model: nn.Module, processor: Any, image: Image.Image, system_prompt: str, user_text: str
) -> tuple[list[int], dict[str, Any]]:
    """One job's prompt token ids and the prompt kwargs mlx-vlm's BatchGenerator prefills from.

    The image is encoded and the prompt embedded for this job alone (no padding, no peers);
    the kwargs carry `inputs_embeds` and the model's per-prompt extras (Qwen3-VL: positions,
    the image-token mask and the deepstack features).
    """
    inputs, extra = _prepare(model, processor, image, system_prompt, user_text)
    input_ids = inputs["input_ids"]
    features = model.get_input_embeddings(
        input_ids, inputs["pixel_values"], mask=inputs.get("attention_mask"), **extra
    )
    kwargs = {**extra, **{k: v for k, v in features.to_dict().items() if v is not None}}
    return [int(t) for t in input_ids.reshape(-1).tolist()], kwargs


def _prepare(
    model: nn.Module, processor: Any, image: Image.Image, system_prompt: str, user_text: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The processor's inputs for one prompt and image, and the extras the model takes."""
    inputs = prepare_inputs(
        processor,
        # Intake already sized it for the model (photos.intake.prepare).
        images=[image],
        prompts=build_prompt(model, processor, system_prompt, user_text),
        image_token_index=getattr(model.config, "image_token_index", None),
    )
    extra = {
        key: value
        for key, value in inputs.items()
        if key not in ("input_ids", "pixel_values", "attention_mask")
    }
    return inputs, extra


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
    inputs, extra = _prepare(model, processor, probe_image(), _PROBE_SYSTEM, _PROBE_TEXT)
    output = model(inputs["input_ids"], inputs["pixel_values"], **extra)
    logits = output.logits[0, -1].astype(mx.float32)
    mx.eval(logits)
    return logits
