"""Advisor personas from jobs/personas (MLX-free, so producers validate advisors with it)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import UnknownAdvisor

PERSONA_DIR = Path(__file__).parent / "personas"


@dataclass(frozen=True)
class Persona:
    key: str
    name: str
    focus: str
    voice: str
    looks_for: tuple[str, ...]


@functools.cache
def personas() -> dict[str, Persona]:
    """Every persona file, keyed by its file stem (the advisor id used in requests)."""
    found: dict[str, Persona] = {}
    for path in sorted(PERSONA_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        found[path.stem] = Persona(
            key=path.stem,
            name=data["name"],
            focus=data["focus"],
            voice=" ".join(data["voice"].split()),
            looks_for=tuple(data["looks_for"]),
        )
    return found


def get_persona(advisor: str) -> Persona:
    try:
        return personas()[advisor]
    except KeyError:
        raise UnknownAdvisor(
            f"Unknown advisor {advisor[:64]!r}; known advisors: {sorted(personas())}"
        ) from None
