"""Builds a seeded random-weight Qwen3-VL checkpoint in the Hugging Face layout, without MLX."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from advisor_worker.devtools.checkpoint_files import (
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    json_files,
)
from advisor_worker.devtools.qwen_vocab import (
    ADDED_TOKENS,
    SPECIAL_START_ID,
    embedding_rows,
    qwen_tokenizer,
)

logger = logging.getLogger(__name__)

__all__ = ["ADDED_TOKENS", "SIZES", "ModelSize", "build_tiny_model", "parameter_count"]


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
    # ~0.2M parameters besides the 151,936-row embedding and head (19.4M): builds in seconds.
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


def build_tiny_model(
    out_dir: Path, seed: int = 0, size: str = "tiny", vocab: int | None = None
) -> Path:
    """Write a random-weight Qwen3-VL checkpoint to `out_dir`; same seed, same bytes.

    `vocab` keeps only Qwen's first `vocab` BPE ranks (None: all 151,643, the real shape).
    """
    if size not in SIZES:
        raise ValueError(f"Unknown model size {size!r}; known: {sorted(SIZES)}")
    shape = SIZES[size]
    _check_shape(shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Qwen's own vocabulary, so prompts and outputs have the real model's token counts; the
    # embedding has Qwen3-VL's 151,936 rows (ids past the tokenizer's are never allowed by
    # the grammar's mask).
    tokenizer = qwen_tokenizer(vocab)
    start = SPECIAL_START_ID if vocab is None else vocab
    ids = {token: start + i for i, (token, _) in enumerate(ADDED_TOKENS)}
    vocab_size = embedding_rows(vocab)

    weights = _random_weights(shape, vocab_size, seed)
    # As in a trained checkpoint, the padding rows past the tokenizer's ids never win: zero
    # head rows score 0 against the best of ~151k random logits.
    weights["lm_head.weight"][tokenizer.get_vocab_size(with_added_tokens=True) :] = 0.0
    # Sorted keys and fixed metadata: the file's bytes depend on nothing but the seed.
    save_file(dict(sorted(weights.items())), str(out_dir / "model.safetensors"), {"format": "pt"})
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    for name, content in json_files(shape, vocab_size, ids).items():
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
    merged = vh * MERGE_SIZE**2
    visual = "model.visual"
    patch_fan_in = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE
    # torch Conv3d layout (out, in, t, h, w); mlx-vlm's sanitize moves channels last.
    normal(
        f"{visual}.patch_embed.proj.weight",
        vh,
        3,
        TEMPORAL_PATCH_SIZE,
        PATCH_SIZE,
        PATCH_SIZE,
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
