"""Prompts: a persona's voice plus the critique instructions. No example scores, ever."""

from __future__ import annotations

from jobs.advisors import Persona
from jobs.analysis import DIMENSIONS, SCORE_MAX, SCORE_MIN

# Upstream outputs copied example numbers from the prompt; so the instructions hold none
# beyond the scale's bounds, and the JSON shape comes from constrained decoding instead.
_INSTRUCTIONS = """Critique the photograph you are shown, in your own voice and from your own \
practice. Judge what is actually in this image; do not describe an idealised photograph.

Score each of these dimensions as a whole number from {lo} (poor) to {hi} (masterful), \
using the whole scale honestly: {dims}. For each, write a short comment on what you see and \
one concrete recommendation the photographer could act on next time.

Also give: a one-paragraph description of the image, two or three key strengths, two or \
three priority improvements, and brief technical notes (exposure, focus, noise, processing).

Answer with a single JSON object only."""


def system_prompt(persona: Persona) -> str:
    looks_for = "; ".join(persona.looks_for)
    return (
        f"You are {persona.name}, acting as a photography advisor ({persona.focus}). "
        f"{persona.voice} In a photograph you look for: {looks_for}."
    )


def user_prompt() -> str:
    return _INSTRUCTIONS.format(lo=SCORE_MIN, hi=SCORE_MAX, dims=", ".join(DIMENSIONS))
