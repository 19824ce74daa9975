"""Figures over repeated runs (min / median / max), ratios against a same-run baseline, goals."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    """One measured quantity over repeated runs."""

    values: tuple[float, ...]
    unit: str = ""

    @classmethod
    def of(cls, values: Sequence[float], unit: str = "") -> Figure:
        if not values:
            raise ValueError("a figure needs at least one run")
        return cls(tuple(float(v) for v in values), unit)

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def show(self, digits: int = 2) -> str:
        """`median (min-max)`, or the one value when there was a single run."""
        unit = f" {self.unit}" if self.unit else ""
        if len(self.values) == 1:
            return f"{self.median:.{digits}f}{unit}"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f}){unit}"


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Figure:
    """Paired run by run, so drift on a shared machine hits both sides of each ratio alike."""
    return Figure.of([n / d for n, d in zip(numerators, denominators, strict=True)])


@dataclass(frozen=True)
class Goal:
    """A target for a ratio, checked on its median; `why` and `fix` explain a miss."""

    name: str
    ratio: Figure
    target: float
    at_least: bool  # True: ratio >= target is met; False: ratio <= target is met
    why: str = ""
    fix: str = ""

    @property
    def is_met(self) -> bool:
        r = self.ratio.median
        return r >= self.target if self.at_least else r <= self.target

    @property
    def target_text(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.target:g}"

    @property
    def shortfall(self) -> str:
        """How far the median is from the target, in percent of the target."""
        if self.is_met:
            return "met"
        gap = abs(self.ratio.median - self.target) / self.target * 100
        spans = self.ratio.low <= self.target <= self.ratio.high
        return f"missed by {gap:.1f}%" + (" (the runs' range spans the target)" if spans else "")


@dataclass
class Section:
    """One benchmark's results: markdown tables and notes, plus the goals it checks."""

    title: str
    intro: str = ""
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    seconds: float = 0.0


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
