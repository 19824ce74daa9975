"""The batch's decode step through mlx-vlm's fused greedy hook: taken, and changing no text."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from advisor_worker import decode_step
from tests.advisor_worker.test_batching import alone, job, noise


@contextmanager
def counted_steps(language_model: Any) -> Iterator[list[int]]:
    """The decode steps taken through the worker's hook while inside, one entry each."""
    decode_step.install(language_model)
    hooked = language_model.fused_greedy_decode
    steps: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return hooked(*args, **kwargs)

    object.__setattr__(language_model, "fused_greedy_decode", counting)
    try:
        yield steps
    finally:
        object.__setattr__(language_model, "fused_greedy_decode", hooked)


def test_mlx_vlm_takes_the_hook_and_it_gives_the_texts_of_upstreams_own_step(
    tiny_model: tuple[Any, Any],
) -> None:
    language_model = tiny_model[0].language_model
    specs = [job(0, noise(0, (96, 64)), max_tokens=40),
             job(1, noise(1, (64, 96)), max_tokens=40, temperature=0.2)]  # fmt: skip
    with counted_steps(language_model) as calls:
        with_hook = [alone(tiny_model, spec).text for spec in specs]
    hooked = language_model.fused_greedy_decode
    try:
        # Upstream's own step: the hook gone, install() (idempotent) does not put it back.
        object.__delattr__(language_model, "fused_greedy_decode")
        upstream = [alone(tiny_model, spec).text for spec in specs]
    finally:
        object.__setattr__(language_model, "fused_greedy_decode", hooked)
    # If mlx-vlm stops calling the hook, the log-softmax is back: see advisor_worker/decode_step.
    # Alone in the batch, a step feeds the grammar's forced tokens too: fewer steps than tokens.
    assert 2 * 10 <= len(calls) < 2 * 39
    assert with_hook == upstream
    assert all(text.startswith("{") for text in with_hook)
