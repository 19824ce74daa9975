"""The JSON files of a built Qwen3-VL checkpoint: model, generation, tokenizer, processor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advisor_worker.devtools.qwen_vocab import ADDED_TOKENS

if TYPE_CHECKING:
    from advisor_worker.devtools.tiny_model import ModelSize

__all__ = ["CHAT_TEMPLATE", "MAX_PIXELS", "MIN_PIXELS", "json_files"]

# Small on purpose: image tokens = pixels / 1024, and tests want a few dozen at most.
MIN_PIXELS = 32 * 32 * 4
MAX_PIXELS = 256 * 256
PATCH_SIZE = 16
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
RMS_NORM_EPS = 1e-6

# Qwen3-VL's chat template without tools or thinking: no default system turn (Qwen2-VL had
# one); image items render as <|vision_start|><|image_pad|><|vision_end|>, which the processor
# expands to one <|image_pad|> per merged patch.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
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


def json_files(shape: ModelSize, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
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
        "rms_norm_eps": RMS_NORM_EPS,
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
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
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
        "merge_size": MERGE_SIZE,
        "patch_size": PATCH_SIZE,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS},
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
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
