"""How the minimum samples were chosen: `python -m bench.minimums`.

A/A false-positive rates of the project's tests (producers/ops/sequential.py), read after
every observation, for several minimums: the Welch-variance mSPRT on unequal splits and
spreads (2,000 observations per experiment), and the paired t-mixture on skewed differences
(exponential minus 1, mean 0; 1,000 pairs per experiment). Seeded; no services.
"""

from __future__ import annotations

import argparse

import numpy as np

from producers.ops.sequential import ALPHA, one_sample_paths, two_sample_paths

TWO_SAMPLE_CASES = ((0.1, 2.0), (0.1, 0.5), (0.1, 1.0), (0.5, 1.0))  # (candidate share, sd ratio)
MINIMUMS_PER_ARM = (2, 5, 10, 20, 30)
MINIMUM_PAIRS = (2, 20, 40, 50, 60)


def two_sample_rates(rng: np.random.Generator, experiments: int) -> list[list[str]]:
    rows = []
    for share, ratio in TWO_SAMPLE_CASES:
        is_b = rng.random((experiments, 2000)) < share
        values = rng.normal(0.0, 1.0, is_b.shape) * np.where(is_b, ratio, 1.0)
        rates = [(two_sample_paths(values, is_b, min_per_arm=m)["p"][:, -1] <= ALPHA).mean()
                 for m in MINIMUMS_PER_ARM]  # fmt: skip
        rows.append([f"{share:.0%} candidate, sd ratio {ratio:g}", *(f"{r:.1%}" for r in rates)])
    return rows


def paired_rates(rng: np.random.Generator, experiments: int) -> list[list[str]]:
    rows = []
    for sign, name in ((1.0, "exponential - 1"), (-1.0, "1 - exponential")):
        diffs = sign * (rng.exponential(1.0, (experiments, 1000)) - 1.0)
        rates = [(one_sample_paths(diffs, min_n=m)["p"][:, -1] <= ALPHA).mean()
                 for m in MINIMUM_PAIRS]  # fmt: skip
        rows.append([name, *(f"{r:.2%}" for r in rates)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print("min per arm:", MINIMUMS_PER_ARM)
    for row in two_sample_rates(rng, args.experiments):
        print(" | ".join(row))
    print("min pairs:", MINIMUM_PAIRS)
    for row in paired_rates(rng, 2 * args.experiments):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
