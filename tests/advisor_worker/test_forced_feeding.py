"""A row alone in the worker's batch is fed its grammar's forced tokens, with the text of one
token a step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from advisor_worker import decode_step
from advisor_worker.batching import GenerationJob
from advisor_worker.generation import GenerationResult
from jobs.analysis import generation_schema
from tests.advisor_worker.test_batching import batched, job, noise


def _steps_and_results(
    tiny_model: tuple[Any, Any], specs: list[GenerationJob], slots: int
) -> tuple[int, list[GenerationResult]]:
    """The worker's scheduler at `slots`: decode steps taken through the hook, and results."""
    language_model = tiny_model[0].language_model
    decode_step.install(language_model)
    hooked = language_model.fused_greedy_decode
    steps = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return hooked(*args, **kwargs)

    object.__setattr__(language_model, "fused_greedy_decode", counting)
    try:
        tickets = batched(tiny_model, specs, slots=slots)
    finally:
        object.__setattr__(language_model, "fused_greedy_decode", hooked)
    return len(steps), [ticket.result() for ticket in tickets]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_alone_in_the_batch_a_row_is_fed_its_forced_tokens_and_writes_the_same_text(
    tiny_model: tuple[Any, Any], temperature: float
) -> None:
    specs = [job(i, noise(i, (96, 64)), schema=generation_schema(16), temperature=temperature)
             for i in range(2)]  # fmt: skip
    steps_alone, alone_results = _steps_and_results(tiny_model, specs, slots=1)
    steps_together, together = _steps_and_results(tiny_model, specs, slots=2)

    assert [r.text for r in alone_results] == [r.text for r in together]
    assert [r.output_tokens for r in alone_results] == [r.output_tokens for r in together]
    tokens = sum(r.output_tokens for r in alone_results)
    # While two rows share the batch, a step is one token each (the first comes from the
    # prefill): no feeding until the shorter one ends.
    assert steps_together >= min(r.output_tokens for r in together) - 1
    # Alone, the JSON's keys and punctuation (most of a short critique) went in with a step.
    assert steps_alone < tokens / 2
    assert all(json.loads(r.text) for r in alone_results)


@pytest.mark.parametrize("cap", [3, 9, 40, 41])
def test_feeding_never_passes_the_token_cap(tiny_model: tuple[Any, Any], cap: int) -> None:
    spec = job(0, noise(0, (96, 64)), schema=generation_schema(16), max_tokens=cap)
    _, (fed,) = _steps_and_results(tiny_model, [spec], slots=1)
    _, (stepped, _) = _steps_and_results(tiny_model, [spec, spec], slots=2)

    assert (fed.output_tokens, fed.finish_reason) == (cap, "length")
    assert (fed.text, fed.output_tokens) == (stepped.text, stepped.output_tokens)
