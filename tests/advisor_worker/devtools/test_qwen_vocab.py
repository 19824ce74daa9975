"""Qwen's vocabulary converted from dashscope's tiktoken ranks encodes as tiktoken does."""

from __future__ import annotations

import pytest
import tiktoken

from advisor_worker.devtools.qwen_vocab import (
    ADDED_TOKENS,
    EMBEDDING_ROWS,
    SPECIAL_START_ID,
    embedding_rows,
    load_ranks,
    qwen_tokenizer,
)
from tests.conftest import TEST_VOCAB

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


@pytest.mark.parametrize("text", TEXTS)
def test_a_cut_encodes_as_tiktoken_does_with_the_first_ranks_only(text: str) -> None:
    source = load_ranks()
    first = {token: rank for token, rank in source.ranks.items() if rank < TEST_VOCAB}
    expected = tiktoken.Encoding(
        "qwen-cut", pat_str=source.pattern, mergeable_ranks=first, special_tokens={}
    ).encode(text)

    assert qwen_tokenizer(TEST_VOCAB).encode(text).ids == expected
    assert qwen_tokenizer(TEST_VOCAB).decode(expected) == text


def test_a_cut_puts_the_added_tokens_after_its_ranks_and_pads_its_rows_like_qwen() -> None:
    tokenizer = qwen_tokenizer(TEST_VOCAB)

    assert tokenizer.get_vocab_size(with_added_tokens=True) == TEST_VOCAB + len(ADDED_TOKENS)
    assert tokenizer.token_to_id("<|im_end|>") == TEST_VOCAB + 2
    assert embedding_rows(TEST_VOCAB) == 8_320 and embedding_rows() == EMBEDDING_ROWS
    # Most of JSON's and English's pieces are among the first ranks: a critique takes about
    # as many tokens in the cut (at most half again) as in Qwen's whole vocabulary.
    text = (
        '{"image_description": "A pier at dusk", "dimensions": [{"name": "Composition", '
        '"score": 7, "comment": "The horizon sits on the upper third."}]}'
    )
    cut, whole = qwen_tokenizer(TEST_VOCAB).encode(text).ids, qwen_tokenizer().encode(text).ids
    assert len(whole) <= len(cut) <= 1.5 * len(whole)  # 53 and 39


@pytest.mark.parametrize("kept", [255, 0, SPECIAL_START_ID + 1])
def test_a_cut_outside_the_bytes_and_the_ranks_is_refused(kept: int) -> None:
    with pytest.raises(ValueError, match="between 256 \\(the bytes\\) and 151643 ranks"):
        qwen_tokenizer(kept)
