"""Builds a seeded random-weight Qwen3-VL checkpoint in the Hugging Face layout, without MLX."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

logger = logging.getLogger(__name__)

__all__ = ["SIZES", "ModelSize", "build_tiny_model", "parameter_count"]

# Qwen2/2.5/3's pre-tokenizer split (the tiktoken cl100k pattern with single digits).
QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens in Qwen's order, with Qwen's `special` flags; the ids follow the BPE
# vocabulary, so the relative layout matches the real checkpoint.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

# Qwen2-VL's chat template: image items render as <|vision_start|><|image_pad|><|vision_end|>,
# which the processor expands to one <|image_pad|> per merged patch.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small on purpose: image tokens = pixels / 1024, and tests want a few dozen at most.
MIN_PIXELS = 32 * 32 * 4
MAX_PIXELS = 256 * 256

# The training text: photo-critique prose plus the Analysis JSON shape, so keys and
# dimension names become few tokens and constrained outputs stay short.
_CORPUS: tuple[str, ...] = (
    "The photograph shows a quiet harbour at dawn: fishing boats rest on still water, "
    "and a low mist softens the hills behind them.",
    "Composition: the horizon sits on the upper third and the leading line of the pier "
    "draws the eye toward the lighthouse.",
    "Lighting: warm side light from the rising sun rakes across the hulls; the shadows "
    "are open and the highlights hold their detail.",
    "Focus & Sharpness: the foreground rope is crisp, the boats are sharp, and the far "
    "hills fall gently out of focus.",
    "Color Harmony: muted blues and soft oranges balance each other; the red buoy is a "
    "small, strong accent.",
    "Depth & Perspective: overlapping boats, the pier and the hills build three clear "
    "planes of depth.",
    "Visual Balance: the heavy dark hull on the left is weighed against the bright sky "
    "on the right.",
    "Emotional Impact: the scene feels calm, patient and a little lonely, like the "
    "first minutes of a working day.",
    "Recommendation: step two paces left so the mast no longer touches the horizon, and "
    "expose for the sky to keep the sun's glow.",
    "Try a lower angle, a longer lens, a slower shutter speed or a smaller aperture; "
    "bracket the exposure and check the histogram.",
    "A portrait in window light: the subject's eyes are in focus, the background is "
    "clean, and the catchlights give the face life.",
    "The street scene is busy; a tighter crop would remove the distracting sign and "
    "strengthen the gesture of the cyclist.",
    "Noise is visible in the shadows at ISO 6400; the white balance leans green under "
    "the fluorescent tubes.",
    "Strengths: strong leading lines, honest colour, a decisive moment. Improvements: "
    "straighten the horizon, recover the highlights.",
    "Technical notes: 35mm, f/8, 1/250 s, ISO 100, processed with gentle contrast and "
    "no heavy sharpening.",
    "Ansel would ask for a full tonal range, from deep blacks to clean whites; Cartier-"
    "Bresson would wait for the decisive moment.",
    "Numbers and symbols: 0 1 2 3 4 5 6 7 8 9 10 - + . , ; : ! ? ( ) [ ] { } \" ' / % & * #",
    "Accents and marks: café, naïve, Zürich, São Paulo, “quotes”, em—dash, ½, °, €.",
    '{"image_description": "A calm harbour at dawn with boats and mist.", "dimensions": ['
    '{"name": "Composition", "score": 7, "comment": "Strong lines.", "recommendation": '
    '"Lower the horizon."}, {"name": "Lighting", "score": 8, "comment": "Warm light.", '
    '"recommendation": "Expose for the sky."}, {"name": "Focus & Sharpness", "score": 6, '
    '"comment": "Soft edges.", "recommendation": "Use a tripod."}, {"name": "Color '
    'Harmony", "score": 7, "comment": "Muted tones.", "recommendation": "Warm the '
    'whites."}, {"name": "Depth & Perspective", "score": 5, "comment": "Flat middle.", '
    '"recommendation": "Add a foreground."}, {"name": "Visual Balance", "score": 6, '
    '"comment": "Heavy left.", "recommendation": "Shift right."}, {"name": "Emotional '
    'Impact", "score": 9, "comment": "Quiet mood.", "recommendation": "Keep it simple."}'
    '], "key_strengths": ["Light", "Mood"], "priority_improvements": ["Horizon", '
    '"Crop"], "technical_notes": "Slight noise in the shadows."}',
)


@dataclass(frozen=True)
class ModelSize:
    """Shape of one generated checkpoint: the text decoder and the vision tower."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    mrope_section: tuple[int, int, int]
    vision_hidden_size: int
    vision_depth: int
    vision_num_heads: int
    vision_intermediate_size: int
    vision_grid_side: int
    deepstack_visual_indexes: tuple[int, ...]


SIZES: dict[str, ModelSize] = {
    # ~0.4M parameters: builds in well under a second and decodes at hundreds of tok/s.
    "tiny": ModelSize(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=192,
        mrope_section=(4, 2, 2),
        vision_hidden_size=32,
        vision_depth=2,
        vision_num_heads=2,
        vision_intermediate_size=64,
        vision_grid_side=8,
        deepstack_visual_indexes=(0,),
    ),
    # ~160M parameters: per-token costs of the same order as a small real VLM, for benchmarks.
    "medium": ModelSize(
        hidden_size=1024,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=64,
        intermediate_size=3072,
        mrope_section=(12, 10, 10),
        vision_hidden_size=256,
        vision_depth=4,
        vision_num_heads=4,
        vision_intermediate_size=1024,
        vision_grid_side=16,
        deepstack_visual_indexes=(1, 2),
    ),
}

_BPE_VOCAB_SIZE = 1024
_PATCH_SIZE = 16
_TEMPORAL_PATCH_SIZE = 2
_MERGE_SIZE = 2
_RMS_NORM_EPS = 1e-6


def build_tiny_model(out_dir: Path, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random-weight Qwen3-VL checkpoint to `out_dir`; same seed, same bytes."""
    if size not in SIZES:
        raise ValueError(f"Unknown model size {size!r}; known: {sorted(SIZES)}")
    shape = SIZES[size]
    _check_shape(shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer()
    ids = {token: _token_id(tokenizer, token) for token, _ in ADDED_TOKENS}
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    weights = _random_weights(shape, vocab_size, seed)
    # Sorted keys and fixed metadata: the file's bytes depend on nothing but the seed.
    save_file(dict(sorted(weights.items())), str(out_dir / "model.safetensors"), {"format": "pt"})
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    for name, content in _json_files(shape, vocab_size, ids).items():
        (out_dir / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    logger.info(
        "Built %s Qwen3-VL checkpoint (seed %d, %d parameters, vocab %d) in %s",
        size,
        seed,
        sum(w.size for w in weights.values()),
        vocab_size,
        out_dir,
    )
    return out_dir


def parameter_count(model_dir: Path) -> int:
    """Number of parameters stored in a checkpoint's model.safetensors."""
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="numpy") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118


def _check_shape(shape: ModelSize) -> None:
    if sum(shape.mrope_section) != shape.head_dim // 2:
        raise ValueError(f"mrope_section {shape.mrope_section} must sum to head_dim/2")
    if shape.hidden_size != shape.num_attention_heads * shape.head_dim:
        # mlx-vlm sizes its KV cache from hidden_size // num_attention_heads.
        raise ValueError("hidden_size must equal num_attention_heads * head_dim")


def _train_tokenizer() -> Tokenizer:
    """Byte-level BPE like Qwen's, trained on the built-in corpus (no download)."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        # All 256 byte symbols, so any UTF-8 text (and any output id) round-trips.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    for token, special in ADDED_TOKENS:
        added = AddedToken(token, special=special, normalized=False)
        # One at a time, to keep Qwen's order across special and non-special tokens.
        if special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
    return tokenizer


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"token {token!r} missing from the trained tokenizer")
    return int(token_id)


def _random_weights(shape: ModelSize, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """HF-named float32 tensors; matrices scaled by 1/sqrt(fan_in), norms at one, biases zero."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}

    def normal(name: str, *dims: int, std: float) -> None:
        weights[name] = (rng.standard_normal(dims, dtype=np.float32) * np.float32(std)).astype(
            np.float32
        )

    def linear(name: str, out_features: int, in_features: int, bias: bool = False) -> None:
        normal(f"{name}.weight", out_features, in_features, std=in_features**-0.5)
        if bias:
            weights[f"{name}.bias"] = np.zeros(out_features, dtype=np.float32)

    def norm(name: str, dim: int, bias: bool = False) -> None:
        weights[f"{name}.weight"] = np.ones(dim, dtype=np.float32)
        if bias:
            weights[f"{name}.bias"] = np.zeros(dim, dtype=np.float32)

    h, hd = shape.hidden_size, shape.head_dim
    text = "model.language_model"
    # Unit-variance embeddings and an untied head: tiny embeddings or tied weights make a
    # random model repeat its input token.
    normal(f"{text}.embed_tokens.weight", vocab_size, h, std=1.0)
    for i in range(shape.num_hidden_layers):
        layer = f"{text}.layers.{i}"
        linear(f"{layer}.self_attn.q_proj", shape.num_attention_heads * hd, h)
        linear(f"{layer}.self_attn.k_proj", shape.num_key_value_heads * hd, h)
        linear(f"{layer}.self_attn.v_proj", shape.num_key_value_heads * hd, h)
        linear(f"{layer}.self_attn.o_proj", h, shape.num_attention_heads * hd)
        norm(f"{layer}.self_attn.q_norm", hd)
        norm(f"{layer}.self_attn.k_norm", hd)
        linear(f"{layer}.mlp.gate_proj", shape.intermediate_size, h)
        linear(f"{layer}.mlp.up_proj", shape.intermediate_size, h)
        linear(f"{layer}.mlp.down_proj", h, shape.intermediate_size)
        norm(f"{layer}.input_layernorm", h)
        norm(f"{layer}.post_attention_layernorm", h)
    norm(f"{text}.norm", h)
    linear("lm_head", vocab_size, h)

    vh = shape.vision_hidden_size
    merged = vh * _MERGE_SIZE**2
    visual = "model.visual"
    patch_fan_in = 3 * _TEMPORAL_PATCH_SIZE * _PATCH_SIZE * _PATCH_SIZE
    # torch Conv3d layout (out, in, t, h, w); mlx-vlm's sanitize moves channels last.
    normal(
        f"{visual}.patch_embed.proj.weight",
        vh,
        3,
        _TEMPORAL_PATCH_SIZE,
        _PATCH_SIZE,
        _PATCH_SIZE,
        std=patch_fan_in**-0.5,
    )
    weights[f"{visual}.patch_embed.proj.bias"] = np.zeros(vh, dtype=np.float32)
    normal(f"{visual}.pos_embed.weight", shape.vision_grid_side**2, vh, std=1.0)
    for i in range(shape.vision_depth):
        block = f"{visual}.blocks.{i}"
        norm(f"{block}.norm1", vh, bias=True)
        norm(f"{block}.norm2", vh, bias=True)
        linear(f"{block}.attn.qkv", 3 * vh, vh, bias=True)
        linear(f"{block}.attn.proj", vh, vh, bias=True)
        linear(f"{block}.mlp.linear_fc1", shape.vision_intermediate_size, vh, bias=True)
        linear(f"{block}.mlp.linear_fc2", vh, shape.vision_intermediate_size, bias=True)
    mergers = [f"{visual}.merger"] + [
        f"{visual}.deepstack_merger_list.{i}" for i in range(len(shape.deepstack_visual_indexes))
    ]
    for index, merger in enumerate(mergers):
        # The main merger norms each patch; deepstack mergers norm after the 2x2 shuffle.
        norm(f"{merger}.norm", vh if index == 0 else merged, bias=True)
        linear(f"{merger}.linear_fc1", merged, merged, bias=True)
        linear(f"{merger}.linear_fc2", h, merged, bias=True)
    return weights


def _json_files(shape: ModelSize, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    """config.json, generation_config.json, tokenizer and processor configs, as Qwen ships them."""
    eos, pad = ids["<|im_end|>"], ids["<|endoftext|>"]
    text_config = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": pad,
        "dtype": "float32",
        "eos_token_id": eos,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": 32768,
        "model_type": "qwen3_vl_text",
        "num_attention_heads": shape.num_attention_heads,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_key_value_heads": shape.num_key_value_heads,
        "rms_norm_eps": _RMS_NORM_EPS,
        "rope_scaling": {
            "mrope_interleaved": True,
            "mrope_section": list(shape.mrope_section),
            "rope_type": "default",
        },
        "rope_theta": 5000000,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    vision_config = {
        "deepstack_visual_indexes": list(shape.deepstack_visual_indexes),
        "depth": shape.vision_depth,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": shape.vision_hidden_size,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": shape.vision_intermediate_size,
        "model_type": "qwen3_vl",
        "num_heads": shape.vision_num_heads,
        # A square: the position table is interpolated over a side x side grid.
        "num_position_embeddings": shape.vision_grid_side**2,
        "out_hidden_size": shape.hidden_size,
        "patch_size": _PATCH_SIZE,
        "spatial_merge_size": _MERGE_SIZE,
        "temporal_patch_size": _TEMPORAL_PATCH_SIZE,
    }
    config = {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "image_token_id": ids["<|image_pad|>"],
        "model_type": "qwen3_vl",
        "text_config": text_config,
        "tie_word_embeddings": False,
        "transformers_version": "4.57.0",
        "video_token_id": ids["<|video_pad|>"],
        "vision_config": vision_config,
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
    }
    generation_config = {
        "bos_token_id": pad,
        "do_sample": True,
        "eos_token_id": [eos, pad],
        "pad_token_id": pad,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "transformers_version": "4.57.0",
    }
    image_processor = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "merge_size": _MERGE_SIZE,
        "patch_size": _PATCH_SIZE,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS},
        "temporal_patch_size": _TEMPORAL_PATCH_SIZE,
    }
    added_tokens_decoder = {
        str(ids[token]): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for token, special in ADDED_TOKENS
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": [t for t, special in ADDED_TOKENS[1:] if special],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "processor_class": "Qwen3VLProcessor",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2TokenizerFast",
        "unk_token": None,
    }
    return {
        "config.json": config,
        "generation_config.json": generation_config,
        "preprocessor_config.json": {
            **image_processor,
            "image_processor_type": "Qwen2VLImageProcessorFast",
            "processor_class": "Qwen3VLProcessor",
        },
        "video_preprocessor_config.json": {
            **image_processor,
            "fps": 2,
            "processor_class": "Qwen3VLProcessor",
            "video_processor_type": "Qwen3VLVideoProcessor",
        },
        "chat_template.json": {"chat_template": CHAT_TEMPLATE},
        "tokenizer_config.json": tokenizer_config,
    }
