"""Qwen's vocabulary converted from dashscope's tiktoken ranks encodes as tiktoken does."""

from __future__ import annotations

import pytest
import tiktoken

from advisor_worker.devtools.qwen_vocab import (
    ADDED_TOKENS,
    SPECIAL_START_ID,
    load_ranks,
    qwen_tokenizer,
)

TEXTS = (
    "Hello world!",
    "Composition: the horizon sits on the upper third; the pier draws the eye.",
    "Zürich, São Paulo, café, naïve, “quotes”, em—dash, ½ °€ 12345 ISO 6400 f/8 1/250 s",
    "  leading spaces\n\n\ttabs and\r\nnewlines   trailing   ",
    "日本語のテキスト、中文文本。한국어 텍스트",
    'emoji 🙂👍🏽 {"name": "Composition", "score": 7, "comment": "Strong lines."}',
    "I'm sure it's the photographer's, they'll say; DON'T shout. x==y&&z!=0",
)


@pytest.fixture(scope="module")
def tiktoken_encoding() -> tiktoken.Encoding:
    source = load_ranks()
    return tiktoken.Encoding(
        "qwen", pat_str=source.pattern, mergeable_ranks=source.ranks, special_tokens={}
    )


@pytest.mark.parametrize("text", TEXTS)
def test_the_converted_tokenizer_encodes_as_tiktoken_does_with_the_same_ranks(
    tiktoken_encoding: tiktoken.Encoding, text: str
) -> None:
    expected = tiktoken_encoding.encode(text)

    assert qwen_tokenizer().encode(text).ids == expected
    assert qwen_tokenizer().decode(expected) == text


def test_qwens_vocabulary_has_its_ranks_then_qwen3_vls_added_tokens_from_151643() -> None:
    tokenizer = qwen_tokenizer()

    assert len(load_ranks().ranks) == SPECIAL_START_ID == 151_643
    assert tokenizer.get_vocab_size(with_added_tokens=True) == 151_669
    assert [tokenizer.token_to_id(t) for t, _ in ADDED_TOKENS[:3]] == [151_643, 151_644, 151_645]
    assert tokenizer.token_to_id("<|image_pad|>") == 151_655
    assert tokenizer.token_to_id("</think>") == 151_668


def test_special_tokens_in_text_encode_as_one_id_each() -> None:
    ids = qwen_tokenizer().encode("<|im_start|>user\n<|vision_start|><|image_pad|>").ids

    assert ids[0] == 151_644 and ids[-2:] == [151_652, 151_655]
