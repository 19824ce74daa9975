"""The continuous-batch scheduler on the tiny random Qwen3-VL: rows never see each other."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from advisor_worker.batching import BatchScheduler, GenerationJob, Ticket, generate_json
from advisor_worker.errors import GenerationCancelled, GenerationTimeout
from advisor_worker.generation import GenerationResult
from jobs.analysis import GeneratedAnalysis, generation_schema

SCHEMA = generation_schema(text_limit=24)
SYSTEM, USER = "You are a photography advisor.", "Critique this photograph."
# Widths and heights differ, so rows carry different image-token counts.
SIZES = [(224, 224), (224, 160), (320, 96), (128, 256), (200, 200), (96, 320), (256, 128), (64, 64)]


def noise(seed: int, size: tuple[int, int]) -> Image.Image:
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def job(index: int, image: Image.Image, **overrides: Any) -> GenerationJob:
    values: dict[str, Any] = {
        "job_id": f"job-{index}",
        "image": image,
        "system_prompt": SYSTEM,
        "user_text": USER,
        "schema": SCHEMA,
        "max_tokens": 1500,
        "temperature": 0.0,
        "seed": 1000 + index,
    }
    values.update(overrides)
    return GenerationJob(**values)


def alone(tiny_model: tuple[Any, Any], spec: GenerationJob) -> GenerationResult:
    """A batch of one: what the worker does at ADVISOR_WORKER_BATCH=1."""
    model, processor = tiny_model
    return generate_json(
        model, processor, spec.image, spec.system_prompt, spec.user_text, spec.schema,
        max_tokens=spec.max_tokens, temperature=spec.temperature, seed=spec.seed,
    )  # fmt: skip


def batched(
    tiny_model: tuple[Any, Any], specs: list[GenerationJob], slots: int, **hooks: Any
) -> list[Ticket]:
    """Serve `specs` as one scheduler run on this (the model's) thread; tickets in order."""
    model, processor = tiny_model
    scheduler = BatchScheduler(model, processor, slots=slots, **hooks.get("options", {}))
    tickets = [scheduler.submit(spec) for spec in specs]
    watcher = hooks.get("watch")
    if watcher is not None:
        threading.Thread(target=watcher, args=(tickets,), daemon=True).start()
    scheduler.stop()
    scheduler.run()
    if "prefill_batches" in hooks:
        hooks["prefill_batches"].extend(scheduler.prefill_batches)
    return tickets


@pytest.mark.parametrize("temperature", [0.0, 0.2])
def test_a_seeded_job_gives_the_same_text_at_b1_and_in_a_b4_batch_prefilled_together(
    tiny_model: tuple[Any, Any], temperature: float
) -> None:
    specs = [job(i, noise(i, SIZES[i]), temperature=temperature) for i in range(4)]
    prefills: list[int] = []
    # A small chunk: every prompt takes several prefill steps, image tokens span chunks.
    together = batched(tiny_model, specs, slots=4, prefill_batches=prefills,
                       options={"prefill_chunk": 16})  # fmt: skip
    apart = [batched(tiny_model, [spec], slots=1)[0] for spec in specs]

    assert prefills == [4]  # one prefill over the four rows that arrived together
    assert [t.result().text for t in together] == [t.result().text for t in apart]
    assert len({t.result().prompt_tokens for t in together}) == 4
    assert all(t.first_token_at is not None for t in together)


def test_masks_computed_after_the_forward_and_one_by_one_prefills_change_no_text(
    tiny_model: tuple[Any, Any],
) -> None:
    specs = [job(i, noise(i, SIZES[i])) for i in range(3)]
    together: list[int] = []
    apart: list[int] = []
    default = batched(tiny_model, specs, slots=3, prefill_batches=together)
    plain = batched(tiny_model, specs, slots=3, prefill_batches=apart,
                    options={"overlap_masks": False, "max_prefill_rows": 1})  # fmt: skip

    assert (together, apart) == ([3], [1, 1, 1])
    assert [t.result().text for t in default] == [t.result().text for t in plain]


def test_rows_of_mixed_image_sizes_match_the_same_jobs_run_alone_byte_for_byte(
    tiny_model: tuple[Any, Any],
) -> None:
    specs = [job(i, noise(i, size)) for i, size in enumerate(SIZES)]
    tickets = batched(tiny_model, specs, slots=4)
    results = [t.result() for t in tickets]
    references = [alone(tiny_model, spec) for spec in specs]

    same = [r.text == ref.text for r, ref in zip(results, references, strict=True)]
    assert same == [True] * len(specs), same
    assert [r.output_tokens for r in results] == [ref.output_tokens for ref in references]
    assert [r.prompt_tokens for r in results] == [ref.prompt_tokens for ref in references]
    # Different image sizes really gave different prompt lengths.
    assert len({r.prompt_tokens for r in results}) >= 4
    for result in results:
        assert result.finish_reason == "stop"
        GeneratedAnalysis.model_validate(json.loads(result.text))


def test_a_rows_text_does_not_change_when_another_rows_image_changes(
    tiny_model: tuple[Any, Any],
) -> None:
    fixed = job(0, noise(0, (224, 224)))
    texts = set()
    for other_seed, other_size in [(5, (224, 160)), (6, (320, 96)), (7, (224, 224))]:
        neighbour = job(1, noise(other_seed, other_size))
        [mine, _] = batched(tiny_model, [fixed, neighbour], slots=2)
        texts.add(mine.result().text)
    assert texts == {alone(tiny_model, fixed).text}


def test_sampling_is_reproducible_per_job_whatever_shares_the_batch(
    tiny_model: tuple[Any, Any],
) -> None:
    sampled = [job(i, noise(i, SIZES[i]), temperature=0.8) for i in range(4)]
    together = [t.result().text for t in batched(tiny_model, sampled, slots=4)]
    apart = [batched(tiny_model, [spec], slots=1)[0].result().text for spec in sampled[:2]]
    reordered = batched(tiny_model, [sampled[1], sampled[0]], slots=2)

    assert apart == together[:2]
    assert [t.result().text for t in reordered] == [together[1], together[0]]
    assert len(set(together)) == 4  # the seeds differ, so do the draws


def test_a_timed_out_and_a_cancelled_row_end_alone_and_keep_their_partial_text(
    tiny_model: tuple[Any, Any],
) -> None:
    specs = [job(i, noise(i, SIZES[i]), deadline=time.monotonic() + 3600) for i in range(4)]
    # Row 1 runs out of time after its first steps; row 2 is cancelled mid-generation.

    def watch(tickets: list[Ticket]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if tickets[1].tokens >= 20:
                tickets[1].deadline = time.monotonic()
            if tickets[2].tokens >= 20:
                tickets[2].cancel.set()
            if tickets[1].future.done() and tickets[2].future.done():
                return
            time.sleep(0.001)

    tickets = batched(tiny_model, specs, slots=4, watch=watch)

    with pytest.raises(GenerationTimeout) as timed_out:
        tickets[1].result()
    assert not isinstance(timed_out.value, GenerationCancelled)
    with pytest.raises(GenerationCancelled) as cancelled:
        tickets[2].result()
    for failure in (timed_out.value, cancelled.value):
        assert failure.output_tokens >= 20
        assert failure.partial.startswith('{"image_description": "')
    for index in (0, 3):
        assert tickets[index].result().text == alone(tiny_model, specs[index]).text


def test_a_job_past_its_deadline_or_cancelled_before_it_starts_never_takes_a_slot(
    tiny_model: tuple[Any, Any],
) -> None:
    late = job(0, noise(0, (64, 64)), deadline=time.monotonic() - 1)
    fine = job(1, noise(1, (64, 64)))
    model, processor = tiny_model
    scheduler = BatchScheduler(model, processor, slots=2)
    tickets = [scheduler.submit(late), scheduler.submit(fine), scheduler.submit(job(2, fine.image))]
    tickets[2].cancel.set()
    scheduler.stop()
    scheduler.run()

    with pytest.raises(GenerationTimeout, match="before decoding started"):
        tickets[0].result()
    with pytest.raises(GenerationCancelled, match="before decoding started"):
        tickets[2].result()
    assert tickets[1].result().finish_reason == "stop"


def test_a_job_that_hits_its_token_cap_ends_with_length_and_the_rest_go_on(
    tiny_model: tuple[Any, Any],
) -> None:
    specs = [job(0, noise(0, (64, 64)), max_tokens=12), job(1, noise(1, (96, 64)))]
    capped, whole = (t.result() for t in batched(tiny_model, specs, slots=2))
    assert (capped.finish_reason, capped.output_tokens) == ("length", 12)
    assert whole.finish_reason == "stop" and whole.text == alone(tiny_model, specs[1]).text


def test_more_jobs_than_slots_all_finish_and_no_more_than_slots_run_at_once(
    tiny_model: tuple[Any, Any],
) -> None:
    model, processor = tiny_model
    scheduler = BatchScheduler(model, processor, slots=3)
    most = [0]
    tickets = [scheduler.submit(job(i, noise(i, SIZES[i % len(SIZES)]))) for i in range(7)]

    def watch() -> None:
        while not all(t.future.done() for t in tickets):
            most[0] = max(most[0], scheduler.rows_in_use)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    scheduler.stop()
    scheduler.run()
    watcher.join(timeout=5)
    assert all(t.result().finish_reason == "stop" for t in tickets)
    assert most[0] == 3
