"""Constrained decoding: the portable mask, llguidance's limits, schema-valid output from noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import llguidance.numpy
import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from advisor_worker.batching import BatchScheduler, GenerationJob
from advisor_worker.devtools.qwen_vocab import ADDED_TOKENS
from advisor_worker.errors import InvalidOutput
from advisor_worker.generation import GenerationResult
from advisor_worker.structured import apply_token_bitmask, json_schema_constraint
from jobs.analysis import DIMENSIONS, GeneratedAnalysis, generation_schema

TEXT_LIMIT = 8
SCHEMA = generation_schema(text_limit=TEXT_LIMIT)
SYSTEM = "You are a photography advisor."
USER = "Critique this photograph as JSON."


def random_image(rng: np.random.Generator) -> Image.Image:
    height, width = (int(n) for n in rng.integers(16, 320, size=2))
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def valid_document() -> str:
    return json.dumps(
        {
            "image_description": "Harbour",
            "dimensions": [
                {"name": name, "score": 5, "comment": "ok", "recommendation": "more"}
                for name in DIMENSIONS
            ],
            "key_strengths": ["light", "mood"],
            "priority_improvements": ["crop", "tilt"],
            "technical_notes": "noise",
        }
    )


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def feed(processor: Any, token_ids: list[int], vocab: int) -> mx.array:
    """Run the processor over `token_ids` the way mlx-vlm does; the mask for the next token."""
    logits = mx.zeros((1, vocab))
    history = [0]  # the last prompt token: the first call consumes nothing
    masked = processor(mx.array(history), logits)
    for token in token_ids:
        history.append(token)
        masked = processor(mx.array(history), logits)
    return masked


def allowed(masked: mx.array) -> set[int]:
    return set(np.flatnonzero(np.isfinite(np.array(masked[0]))).tolist())


@pytest.fixture(scope="module")
def twenty_results(tiny_model: tuple[Any, Any]) -> list[GenerationResult]:
    """Twenty sampled generations, each with its own seed and its own random image.

    Rows of one batch of twenty, as a worker at ADVISOR_WORKER_BATCH=20 serves them: each
    row's grammar and sampler are its own, and at 151,936 rows a step's cost is mostly the
    head, whatever the rows (5.1x B=1's tokens/s at B=16 against 3.1x at B=4, tiny model).
    """
    model, processor = tiny_model
    scheduler = BatchScheduler(model, processor, slots=20)
    tickets = [
        scheduler.submit(
            GenerationJob(
                f"job-{seed}",
                random_image(np.random.default_rng(1000 + seed)),
                SYSTEM,
                USER,
                SCHEMA,
                max_tokens=1500,
                temperature=1.0,
                seed=seed,
            )
        )  # fmt: skip
        for seed in range(20)
    ]
    scheduler.stop()
    scheduler.run()
    return [ticket.result() for ticket in tickets]


@pytest.mark.parametrize("vocab", [1018, 1050, 990])
def test_the_portable_mask_matches_llguidances_numpy_reference(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    words = (1018 + 31) // 32
    bitmask = rng.integers(-(2**31), 2**31, size=(1, words), dtype=np.int64).astype(np.int32)
    logits = rng.standard_normal((1, vocab)).astype(np.float32)
    expected = logits.copy()
    llguidance.numpy.apply_token_bitmask_inplace(expected, bitmask)

    got = np.array(apply_token_bitmask(mx.array(logits), mx.array(bitmask)))

    np.testing.assert_array_equal(got, expected)
    assert np.isinf(got).any() and np.isfinite(got).any()


def test_the_portable_mask_at_qwens_vocabulary_keeps_the_logits_dtype_and_pads_with_minus_inf() -> (
    None
):
    # llguidance's mask covers the tokenizer's 151,669 ids; the embedding has 151,936 rows.
    rng = np.random.default_rng(7)
    bitmask = rng.integers(-(2**31), 2**31, size=(2, (151_669 + 31) // 32), dtype=np.int64)
    bitmask = bitmask.astype(np.int32)
    logits = rng.standard_normal((2, 151_936)).astype(np.float32)
    expected = logits.copy()
    llguidance.numpy.apply_token_bitmask_inplace(expected, bitmask)

    got = apply_token_bitmask(mx.array(logits).astype(mx.bfloat16), bitmask)

    assert got.dtype == mx.bfloat16
    as_float = np.array(got.astype(mx.float32))
    np.testing.assert_array_equal(np.isinf(as_float), np.isinf(expected))
    assert np.isneginf(as_float[:, bitmask.shape[1] * 32 :]).all()  # past the mask's end


def test_the_portable_mask_keeps_one_dimensional_logits_one_dimensional() -> None:
    bitmask = mx.array(np.array([0b101], dtype=np.int32))

    got = np.array(apply_token_bitmask(mx.zeros((5,)), bitmask))

    np.testing.assert_array_equal(got, [0.0, -np.inf, 0.0, -np.inf, -np.inf])


def test_twenty_constrained_generations_all_parse_and_validate(
    twenty_results: list[GenerationResult],
) -> None:
    for result in twenty_results:
        assert result.finish_reason == "stop", result.text
        json.loads(result.text)
        GeneratedAnalysis.model_validate_json(result.text)


def test_constrained_strings_respect_the_schemas_text_limit(
    twenty_results: list[GenerationResult],
) -> None:
    for result in twenty_results:
        analysis = GeneratedAnalysis.model_validate_json(result.text)
        texts = [analysis.image_description, analysis.technical_notes]
        texts += [d.comment for d in analysis.dimensions] + [
            d.recommendation for d in analysis.dimensions
        ]
        assert all(1 <= len(text) <= TEXT_LIMIT for text in texts)
        bullets = analysis.key_strengths + analysis.priority_improvements
        assert all(1 <= len(text) <= max(16, TEXT_LIMIT // 2) for text in bullets)


def test_constrained_output_never_contains_a_special_token(
    twenty_results: list[GenerationResult],
) -> None:
    specials = [token for token, special in ADDED_TOKENS if special]
    for result in twenty_results:
        assert not any(token in result.text for token in specials), result.text


def test_seeds_and_images_vary_the_constrained_output(
    twenty_results: list[GenerationResult],
) -> None:
    assert len({result.text for result in twenty_results}) == 20
    scores = {
        d.score
        for result in twenty_results
        for d in GeneratedAnalysis.model_validate_json(result.text).dimensions
    }
    # Not one score for all: with Qwen's vocabulary the random head leaves a few digits
    # inside top-p 0.8 (four distinct scores over these 140 were seen).
    assert len(scores) >= 3


def test_without_the_constraint_the_random_model_writes_no_json(
    tiny_model: tuple[Any, Any],
) -> None:
    from mlx_vlm import stream_generate

    from advisor_worker.generation import build_prompt

    model, processor = tiny_model
    prompt = build_prompt(model, processor, SYSTEM, USER)
    text = "".join(
        r.text
        for r in stream_generate(
            model,
            processor,
            prompt,
            image=[random_image(np.random.default_rng(5))],
            max_tokens=200,
            temperature=1.0,
            seed=5,
        )
    )

    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_a_complete_document_leaves_only_eos_allowed(tiny_model: tuple[Any, Any]) -> None:
    _, processor = tiny_model
    tokenizer = processor.tokenizer
    constraint = json_schema_constraint(tokenizer, SCHEMA)
    logits_processor = constraint.new_processor()

    masked = feed(logits_processor, encode(tokenizer, valid_document()), len(tokenizer))

    assert logits_processor.is_accepting
    assert allowed(masked) == {tokenizer.convert_tokens_to_ids("<|im_end|>")}


def test_scores_are_held_between_one_and_ten(tiny_model: tuple[Any, Any]) -> None:
    _, processor = tiny_model
    tokenizer = processor.tokenizer
    prefix = '{"image_description": "x", "dimensions": [{"name": "Composition", "score": '
    digits = {str(n): tokenizer.convert_tokens_to_ids(str(n)) for n in range(10)}

    def allowed_after(text: str) -> set[int]:
        logits_processor = json_schema_constraint(tokenizer, SCHEMA).new_processor()
        return allowed(feed(logits_processor, encode(tokenizer, text), len(tokenizer)))

    at_start = allowed_after(prefix)
    after_ten = allowed_after(prefix + "10")
    after_two = allowed_after(prefix + "2")

    assert digits["0"] not in at_start and digits["1"] in at_start and digits["9"] in at_start
    assert not set(digits.values()) & after_ten
    assert not set(digits.values()) & after_two


def test_the_dimension_names_are_forced_in_order(tiny_model: tuple[Any, Any]) -> None:
    _, processor = tiny_model
    tokenizer = processor.tokenizer
    prefix = '{"image_description": "x", "dimensions": [{"name": "'
    wrong = prefix + 'Lighting"'

    logits_processor = json_schema_constraint(tokenizer, SCHEMA).new_processor()
    with pytest.raises(InvalidOutput, match="rejected token"):
        feed(logits_processor, encode(tokenizer, wrong), len(tokenizer))


def test_a_special_token_inside_a_string_is_rejected(tiny_model: tuple[Any, Any]) -> None:
    _, processor = tiny_model
    tokenizer = processor.tokenizer
    tokens = encode(tokenizer, '{"image_description": "') + [
        tokenizer.convert_tokens_to_ids("<|vision_start|>")
    ]

    logits_processor = json_schema_constraint(tokenizer, SCHEMA).new_processor()
    with pytest.raises(InvalidOutput, match="rejected token"):
        feed(logits_processor, tokens, len(tokenizer))


def test_the_compiled_constraint_is_reused_for_the_same_tokenizer_and_schema(
    tiny_model: tuple[Any, Any],
) -> None:
    tokenizer = tiny_model[1].tokenizer

    first = json_schema_constraint(tokenizer, SCHEMA)
    again = json_schema_constraint(tokenizer, generation_schema(text_limit=TEXT_LIMIT))
    other = json_schema_constraint(tokenizer, generation_schema(text_limit=TEXT_LIMIT + 1))

    assert first is again
    assert other is not first
    assert first.new_processor() is not first.new_processor()
    # Each schema compiles its own grammar over the one llguidance tokenizer.
    assert other.llg_tokenizer is first.llg_tokenizer


def test_a_schema_llguidance_cannot_enforce_is_refused(tiny_model: tuple[Any, Any]) -> None:
    tokenizer = tiny_model[1].tokenizer
    schema = {"type": "string", "format": "no-such-format"}

    with pytest.raises(ValueError, match="not fully supported by llguidance"):
        json_schema_constraint(tokenizer, schema)


@pytest.mark.parametrize("padded", [False, True], ids=["fresh", "after a padded batch call"])
def test_llguidances_view_without_the_copy_equals_the_librarys_own(
    qwen_model_dir: Path,
    padded: bool,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from advisor_worker.structured import _llguidance_view

    # At the real shape: Qwen's whole vocabulary, as a worker on the real model has it.
    tokenizer = AutoTokenizer.from_pretrained(qwen_model_dir)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    if padded:  # as a worker's first prompt leaves it: padding on (off again after the test)
        tokenizer(["a", "bb cc"], padding=True)
        request.addfinalizer(tokenizer.backend_tokenizer.no_padding)
        assert tokenizer.backend_tokenizer.padding is not None
    before = tokenizer.backend_tokenizer.padding
    theirs = llguidance.hf.from_tokenizer(tokenizer)
    # The copy-free branch is the one taken, whatever the padding:
    monkeypatch.setattr(llguidance.hf, "from_tokenizer", lambda _t: pytest.fail("copied"))
    ours = _llguidance_view(tokenizer)

    assert tokenizer.backend_tokenizer.padding == before  # the tokenizer itself is untouched
    assert (ours.vocab_size, ours.eos_token) == (theirs.vocab_size, theirs.eos_token)
    assert ours.vocab_size == 151_669
    ids = range(ours.vocab_size)
    assert [ours.decode_bytes([i]) for i in ids] == [theirs.decode_bytes([i]) for i in ids]
    assert ours.is_special_token(151_645) and theirs.is_special_token(151_645)
    text = "A photo of a lighthouse at dusk, 1/250 s."
    assert ours.tokenize_str(text) == theirs.tokenize_str(text)
