"""The soft time limit inside generation: asked after every step, partial text carried out."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from advisor_worker.batching import generate_json
from advisor_worker.errors import GenerationTimeout
from jobs.analysis import generation_schema


def generate(tiny_model: tuple[Any, Any], **options: Any) -> Any:
    model, processor = tiny_model
    image = Image.new("RGB", (64, 48), (120, 80, 40))
    return generate_json(model, processor, image, "System.", "Critique.",
                         generation_schema(text_limit=64), max_tokens=1500, temperature=1.0,
                         seed=3, **options)  # fmt: skip


def test_generation_stops_at_the_step_where_the_stop_predicate_turns_true(
    tiny_model: tuple[Any, Any],
) -> None:
    seen: list[int] = []
    with pytest.raises(GenerationTimeout) as caught:
        generate(tiny_model, on_progress=seen.append, should_stop=lambda: len(seen) >= 25)
    stopped = caught.value.output_tokens
    # A step writes its token and, alone in the batch, the forced tokens fed with it (the
    # JSON's keys): the row ends after the step that reached 25, within one forced run.
    assert stopped == seen[-1] and 25 <= stopped < 25 + 20
    full = generate(tiny_model)
    assert full.output_tokens > stopped
    # The partial text is the start of what the same seed generates in full.
    assert caught.value.partial and full.text.startswith(caught.value.partial)
    assert f"after {stopped} output tokens" in str(caught.value)


def test_a_stop_predicate_already_true_decodes_nothing(tiny_model: tuple[Any, Any]) -> None:
    with pytest.raises(GenerationTimeout) as caught:
        generate(tiny_model, should_stop=lambda: True)
    assert (caught.value.partial, caught.value.output_tokens) == ("", 0)
