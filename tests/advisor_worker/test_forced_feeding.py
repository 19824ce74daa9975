"""bench.forcing's B=1 decode: forced runs fed whole give the text of one token per forward."""

from __future__ import annotations

from typing import Any

from advisor_worker.devtools.workload import sample_photo
from bench.forcing import decode_b1
from jobs.analysis import generation_schema
from tests.advisor_worker.test_batching import alone, job


def test_feeding_forced_runs_gives_the_one_token_loops_text_and_the_workers(
    tiny_model: tuple[Any, Any],
) -> None:
    model, processor = tiny_model
    spec = job(0, sample_photo(0, (112, 84)), schema=generation_schema(16), max_tokens=400)
    one = decode_b1(model, processor, spec, feed_forced=False)
    fed = decode_b1(model, processor, spec, feed_forced=True)
    assert one.text.startswith('{"image_description": ') and one.forced == 0
    assert (fed.text, fed.token_ids) == (one.text, one.token_ids)
    # Feeding happened: forced runs went through fewer forwards than one per token.
    assert fed.forced > 0 and fed.forwards < one.forwards == len(one.token_ids) - 1
    # The hand loop's positions after the image are the worker's: same greedy text.
    assert one.text == alone(tiny_model, spec).text
