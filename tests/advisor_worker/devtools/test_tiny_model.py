"""The tiny random Qwen3-VL checkpoint: deterministic bytes, Qwen's layout, loadable by mlx-vlm."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_vlm import stream_generate
from PIL import Image
from safetensors.numpy import load_file
from tokenizers import pre_tokenizers
from transformers import AutoConfig, AutoTokenizer

from advisor_worker.devtools.qwen_vocab import (
    ADDED_TOKENS,
    EMBEDDING_ROWS,
    SPECIAL_START_ID,
    embedding_rows,
)
from advisor_worker.devtools.tiny_model import build_tiny_model, parameter_count
from advisor_worker.generation import build_prompt
from tests.conftest import TEST_VOCAB


def file_digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def greedy_tokens(model: Any, processor: Any, image: Image.Image, max_tokens: int) -> list[int]:
    prompt = build_prompt(model, processor, "You are a photography advisor.", "Critique this.")
    tokens = []
    for response in stream_generate(
        model, processor, prompt, image=[image], max_tokens=max_tokens, temperature=0.0
    ):
        if response.token is not None and response.finish_reason is None:
            tokens.append(int(response.token))
    return tokens


def noise_image(seed: int, width: int = 96, height: int = 64) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_the_same_seed_builds_byte_identical_checkpoints(tmp_path: Path) -> None:
    first = file_digests(build_tiny_model(tmp_path / "a", seed=3, vocab=TEST_VOCAB))
    second = file_digests(build_tiny_model(tmp_path / "b", seed=3, vocab=TEST_VOCAB))

    assert "model.safetensors" in first and "tokenizer.json" in first
    assert first == second


def test_another_seed_changes_the_weights_but_not_the_tokenizer(tmp_path: Path) -> None:
    one = file_digests(build_tiny_model(tmp_path / "a", seed=1, vocab=TEST_VOCAB))
    two = file_digests(build_tiny_model(tmp_path / "b", seed=2, vocab=TEST_VOCAB))

    assert one["model.safetensors"] != two["model.safetensors"]
    assert one["tokenizer.json"] == two["tokenizer.json"]
    assert one["config.json"] == two["config.json"]


def test_an_unknown_size_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown model size 'huge'; known: \['medium', 'tiny'\]"):
        build_tiny_model(tmp_path, size="huge")


def test_tiny_checkpoint_has_well_under_a_million_parameters_besides_the_vocabulary(
    tiny_model_dir: Path,
) -> None:
    text = read_json(tiny_model_dir / "config.json")["text_config"]
    # The embedding and the untied head: one row per id of the vocabulary each.
    vocabulary_rows = 2 * text["vocab_size"] * text["hidden_size"]

    assert 100_000 <= parameter_count(tiny_model_dir) - vocabulary_rows <= 1_000_000


def test_config_follows_the_qwen3_vl_rules(qwen_model_dir: Path) -> None:
    config = read_json(qwen_model_dir / "config.json")
    text, vision = config["text_config"], config["vision_config"]
    tokenizer = AutoTokenizer.from_pretrained(qwen_model_dir)

    assert config["model_type"] == "qwen3_vl"
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert sum(text["rope_scaling"]["mrope_section"]) == text["head_dim"] // 2
    # Qwen3-VL's embedding rows; the ids past the tokenizer's are padding no grammar allows.
    assert text["vocab_size"] == EMBEDDING_ROWS == 151_936
    assert len(tokenizer) == 151_669
    assert math.isqrt(vision["num_position_embeddings"]) ** 2 == vision["num_position_embeddings"]
    assert vision["out_hidden_size"] == text["hidden_size"]
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config["vision_start_token_id"] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert read_json(qwen_model_dir / "generation_config.json")["eos_token_id"] == [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]


def test_the_suites_cut_keeps_qwens_first_ranks_then_the_same_added_tokens(
    tiny_model_dir: Path,
) -> None:
    config = read_json(tiny_model_dir / "config.json")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer.convert_tokens_to_ids([token for token, _ in ADDED_TOKENS])

    assert ids == list(range(TEST_VOCAB, TEST_VOCAB + len(ADDED_TOKENS)))
    assert len(tokenizer) == TEST_VOCAB + len(ADDED_TOKENS)
    # Padded to a multiple of 128 rows, as Qwen3-VL pads its 151,669 ids to 151,936.
    assert config["text_config"]["vocab_size"] == embedding_rows(TEST_VOCAB) == 8_320
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert read_json(tiny_model_dir / "generation_config.json")["eos_token_id"] == [
        TEST_VOCAB + 2,
        TEST_VOCAB,
    ]
    # The pad rows past the tokenizer's ids score zero, as in the real-shape build.
    head = load_file(tiny_model_dir / "model.safetensors")["lm_head.weight"]
    assert not head[len(tokenizer) :].any() and head[: len(tokenizer)].any()


def test_weights_use_hugging_face_names_and_a_torch_conv3d_patch_embed(
    tiny_model_dir: Path,
) -> None:
    weights = load_file(tiny_model_dir / "model.safetensors")
    config = read_json(tiny_model_dir / "config.json")
    vision = config["vision_config"]

    assert all(
        k.startswith(("model.language_model.", "model.visual.", "lm_head.")) for k in weights
    )
    assert weights["lm_head.weight"].shape == (config["text_config"]["vocab_size"], 64)
    assert weights["model.visual.patch_embed.proj.weight"].shape == (
        vision["hidden_size"],
        vision["in_channels"],
        vision["temporal_patch_size"],
        vision["patch_size"],
        vision["patch_size"],
    )
    assert all(w.dtype == np.float32 for w in weights.values())


def test_qwen_special_tokens_follow_the_bpe_vocabulary_in_qwens_order(
    qwen_model_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen_model_dir)
    ids = tokenizer.convert_tokens_to_ids([token for token, _ in ADDED_TOKENS])

    assert ids == list(range(SPECIAL_START_ID, SPECIAL_START_ID + len(ADDED_TOKENS)))
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151_655
    assert ids[-1] == len(tokenizer) - 1
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_the_byte_level_tokenizer_round_trips_any_text(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = 'Zürich — 12 cafés {"score": 7}\n\ttab \x00 ☃ 🦉'

    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # Each of the 256 byte symbols is a token of its own, so no text is ever unknown.
    byte_ids = tokenizer.convert_tokens_to_ids(pre_tokenizers.ByteLevel.alphabet())
    assert None not in byte_ids and len(set(byte_ids)) == 256


def test_the_chat_template_renders_an_image_item_as_qwen_vision_tokens(
    tiny_model_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]

    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")


def test_transformers_reads_the_config_as_qwen3_vl(tiny_model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(tiny_model_dir)

    assert type(config).__name__ == "Qwen3VLConfig"
    assert (
        config.text_config.vocab_size
        == read_json(tiny_model_dir / "config.json")["text_config"]["vocab_size"]
    )
    assert config.vision_config.deepstack_visual_indexes == [0]


def test_mlx_vlm_loads_every_tensor_into_its_module(
    tiny_model: tuple[Any, Any], tiny_model_dir: Path
) -> None:
    model, _ = tiny_model
    weights = load_file(tiny_model_dir / "model.safetensors")
    conv = np.array(model.vision_tower.patch_embed.proj.weight)

    # mlx-vlm's sanitize moved the conv's channels last: (out, t, h, w, in).
    np.testing.assert_array_equal(
        conv, weights["model.visual.patch_embed.proj.weight"].transpose(0, 2, 3, 4, 1)
    )
    np.testing.assert_array_equal(
        np.array(model.language_model.lm_head.weight), weights["lm_head.weight"]
    )
    np.testing.assert_array_equal(
        np.array(model.language_model.model.layers[1].mlp.down_proj.weight),
        weights["model.language_model.layers.1.mlp.down_proj.weight"],
    )


def test_generation_with_an_image_expands_one_pad_token_per_merged_patch(
    tiny_model: tuple[Any, Any],
) -> None:
    model, processor = tiny_model
    prompt = build_prompt(model, processor, "System.", "Look.")
    text_only = len(processor.tokenizer.encode(prompt, add_special_tokens=False))

    for response in stream_generate(
        model, processor, prompt, image=[noise_image(0, 128, 64)], max_tokens=3, temperature=0.0
    ):
        last = response

    # 128x64 pixels = 8x4 patches of 16 = 4x2 merged patches: 8 tokens in place of one pad.
    assert last.prompt_tokens == text_only - 1 + 8
    assert last.generation_tokens == 3


def test_the_image_changes_what_the_model_writes(tiny_model: tuple[Any, Any]) -> None:
    model, processor = tiny_model

    first = greedy_tokens(model, processor, noise_image(1), max_tokens=12)
    second = greedy_tokens(model, processor, noise_image(2), max_tokens=12)

    assert len(first) == len(second) == 12
    assert first != second


def test_the_random_model_does_not_echo_one_token(tiny_model: tuple[Any, Any]) -> None:
    model, processor = tiny_model

    tokens = greedy_tokens(model, processor, noise_image(3), max_tokens=40)

    assert len(set(tokens)) >= 10


def test_the_loaded_model_computes_in_float32(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model

    assert model.language_model.model.embed_tokens.weight.dtype == mx.float32
