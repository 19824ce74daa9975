"""The worker feeds its rows their grammars' forced tokens, with the texts of one token a step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from advisor_worker import decode_step
from advisor_worker.batching import GenerationJob
from advisor_worker.generation import GenerationResult
from jobs.analysis import generation_schema
from tests.advisor_worker.test_batching import batched, job, noise
from tests.advisor_worker.test_decode_step import counted_steps


def _steps_and_results(
    tiny_model: tuple[Any, Any], specs: list[GenerationJob], slots: int, *, feed: bool = True
) -> tuple[int, list[GenerationResult]]:
    """The worker's scheduler at `slots`: decode steps taken through the hook, and results.
    `feed=False` switches the feeding off: one token per row a step, as upstream's step."""
    feeding = decode_step._forced_runs
    with counted_steps(tiny_model[0].language_model) as steps:
        try:
            if not feed:
                decode_step._forced_runs = lambda *_: None  # type: ignore[assignment]
            tickets = batched(tiny_model, specs, slots=slots)
        finally:
            decode_step._forced_runs = feeding  # type: ignore[assignment]
    return len(steps), [ticket.result() for ticket in tickets]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_forced_tokens_fed_alone_or_in_a_batch_give_the_texts_of_one_token_a_step(
    tiny_model: tuple[Any, Any], temperature: float
) -> None:
    specs = [job(i, noise(i, size), schema=generation_schema(16), temperature=temperature)
             for i, size in enumerate([(96, 64), (64, 128), (128, 96)])]  # fmt: skip
    steps_one, one = _steps_and_results(tiny_model, specs, slots=3, feed=False)
    steps_batch, batch = _steps_and_results(tiny_model, specs, slots=3)
    steps_alone, alone_results = _steps_and_results(tiny_model, specs, slots=1)

    texts = [r.text for r in one]
    assert [r.text for r in batch] == texts == [r.text for r in alone_results]
    assert [r.output_tokens for r in batch] == [r.output_tokens for r in one]
    assert all(json.loads(text) for text in texts)
    # One token a step: as many steps as the longest row's tokens (the first comes from the
    # prefill). Fed in a batch, the runs the rows start together (the keys) go in together.
    assert steps_one >= max(r.output_tokens for r in one) - 1
    assert steps_batch < 0.85 * steps_one
    # Alone, a row takes its whole runs: most of a short critique is keys and punctuation.
    assert steps_alone < sum(r.output_tokens for r in one) / 2


@pytest.mark.parametrize("cap", [3, 9, 40, 41])
def test_feeding_never_passes_the_token_cap(tiny_model: tuple[Any, Any], cap: int) -> None:
    spec = job(0, noise(0, (96, 64)), schema=generation_schema(16), max_tokens=cap)
    _, (alone_result,) = _steps_and_results(tiny_model, [spec], slots=1)
    _, (in_batch, _) = _steps_and_results(tiny_model, [spec, spec], slots=2)
    _, (stepped,) = _steps_and_results(tiny_model, [spec], slots=1, feed=False)

    for fed in (alone_result, in_batch):
        assert (fed.output_tokens, fed.finish_reason) == (cap, "length")
        assert fed.text == stepped.text
