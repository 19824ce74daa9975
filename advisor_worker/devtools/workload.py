"""The real-shape workload: the worker's own prompt for an advisor, a 4:3 photo, long critiques.

A Mac spends about 95% of a real critique decoding (upstream's real outputs were 740-990
tokens), so a benchmark whose outputs are a few hundred tokens long weighs prefill far too
much. With Qwen's vocabulary, the random-weight models fill the Analysis schema at
`REAL_SHAPE_TEXT_LIMIT` with 900-1,100 output tokens (see docs/batching.md for the measured
distribution). It lives beside the worker, not in `jobs/`: only worker-side tools run it,
and `advisor capacity` reads the result of `advisor-worker bench`, not the workload.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from advisor_worker import prompts
from advisor_worker.batching import GenerationJob
from jobs.advisors import get_persona
from jobs.analysis import REAL_SHAPE_TEXT_LIMIT, generation_schema
from photos.intake import ModelGeometry

__all__ = [
    "OUTPUT_TOKEN_RANGE",
    "REAL_SHAPE_ADVISOR",
    "REAL_SHAPE_MAX_TOKENS",
    "REAL_SHAPE_TEXT_LIMIT",
    "photo_size",
    "real_shape_jobs",
    "sample_photo",
]

REAL_SHAPE_ADVISOR = "ansel"
# REAL_SHAPE_TEXT_LIMIT (jobs.analysis) lands the random-weight models' critiques in this range.
OUTPUT_TOKEN_RANGE = (900, 1100)
# The worker's default cap (ADVISOR_MAX_OUTPUT_TOKENS): a critique is never cut short.
REAL_SHAPE_MAX_TOKENS = 2400


def photo_size(geometry: ModelGeometry, aspect: tuple[int, int] = (4, 3)) -> tuple[int, int]:
    """The largest (width, height) of this aspect the model takes as it is (sides in factors)."""
    wide, high = aspect
    step = geometry.factor
    units = 1
    while (units + 1) * wide * step * (units + 1) * high * step <= geometry.max_pixels:
        units += 1
    return units * wide * step, units * high * step


def sample_photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A seeded photo-like image: a smooth colour gradient with grain, the same in every process."""
    width, height = size
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    base = rng.uniform(40, 215, 3)
    tilt = rng.uniform(-60, 60, (3, 2))
    channels = [base[c] + tilt[c, 0] * x + tilt[c, 1] * y for c in range(3)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def real_shape_jobs(
    count: int,
    geometry: ModelGeometry,
    *,
    temperature: float = 0.2,
    text_limit: int = REAL_SHAPE_TEXT_LIMIT,
    max_tokens: int = REAL_SHAPE_MAX_TOKENS,
    advisor: str = REAL_SHAPE_ADVISOR,
    first_seed: int = 0,
    aspects: Sequence[tuple[int, int]] = ((4, 3),),
) -> list[GenerationJob]:
    """`count` jobs as the worker builds them: the advisor's prompts, a photo, the schema."""
    system = prompts.system_prompt(get_persona(advisor))
    user = prompts.user_prompt()
    schema = generation_schema(text_limit)
    jobs = []
    for index in range(count):
        seed = first_seed + index
        size = photo_size(geometry, aspects[index % len(aspects)])
        jobs.append(
            GenerationJob(
                job_id=f"bench-{seed}",
                image=sample_photo(seed, size),
                system_prompt=system,
                user_text=user,
                schema=schema,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
            )
        )
    return jobs
