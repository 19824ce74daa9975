"""The seeded sampler's exact two-stage top-k."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from advisor_worker.sampling import GumbelSampling, top_k_ids


def _expected(scores: np.ndarray, k: int) -> list[set[int]]:
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in scores]


@pytest.mark.parametrize(
    ("vocab", "allowed"),
    [(151_936, 1.0), (151_936, 0.3), (151_669, 1.0), (1_018, 1.0), (5_000, 0.01)],
)
def test_the_two_stage_top_k_picks_exactly_the_k_largest_in_ascending_id_order(
    vocab: int, allowed: float
) -> None:
    rng = np.random.default_rng(vocab)
    scores = rng.standard_normal((3, vocab)).astype(np.float32)
    scores[rng.random((3, vocab)) >= allowed] = -np.inf  # a grammar's mask
    # Clustered winners: several of the k largest share one block.
    scores[0, 640:650] = 10 + np.arange(10)

    got = np.array(top_k_ids(mx.array(scores), 20))

    assert got.shape == (3, 20)
    assert all(list(row) == sorted(row) for row in got.tolist())
    finite = np.isfinite(scores).sum(axis=-1)
    for row, (ids, want) in enumerate(zip(got.tolist(), _expected(scores, 20), strict=True)):
        if finite[row] >= 20:
            assert set(ids) == want
        else:  # fewer allowed than k: all of them, padded with disallowed ids
            assert {i for i in ids if np.isfinite(scores[row, i])} == {
                i for i in want if np.isfinite(scores[row, i])
            }


def test_a_sampled_token_is_always_among_the_top_k_and_allowed() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((1, 151_936)).astype(np.float32)
    logits[0, rng.random(151_936) < 0.5] = -np.inf
    top = _expected(logits, 20)[0]
    sampler = GumbelSampling(temperature=1.0, top_p=1.0, top_k=20, seed=11)

    drawn = {int(mx.argmax(sampler.process_last_token(0, mx.array(logits)), axis=-1).item())
             for _ in range(200)}  # fmt: skip

    assert drawn <= top
    assert len(drawn) > 5  # it samples, it does not always take the largest
