"""The Analysis output schema (v1) and the JSON schema generation is held to."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = "analysis/v1"

DIMENSIONS: tuple[str, ...] = (
    "Composition",
    "Lighting",
    "Focus & Sharpness",
    "Color Harmony",
    "Depth & Perspective",
    "Visual Balance",
    "Emotional Impact",
)

SCORE_MIN = 1
SCORE_MAX = 10
# Generous ceilings for validation; generation is held to the tighter `text_limit`.
_TEXT_CEILING = 4000
DEFAULT_TEXT_LIMIT = 320
# The bound at which the random-weight test models write critiques of real length (900-1,100
# output tokens with Qwen's vocabulary): the real-shape workload's, in the bench and the demo.
REAL_SHAPE_TEXT_LIMIT = 240

Text = Annotated[str, Field(max_length=_TEXT_CEILING)]


class Dimension(BaseModel):
    """One scored dimension of the critique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    score: int = Field(ge=SCORE_MIN, le=SCORE_MAX)
    comment: Text
    recommendation: Text

    @field_validator("name")
    @classmethod
    def _known_dimension(cls, name: str) -> str:
        if name not in DIMENSIONS:
            raise ValueError(f"unknown dimension {name!r}; expected one of {list(DIMENSIONS)}")
        return name


class GeneratedAnalysis(BaseModel):
    """What the model writes: everything but the overall score, which the worker computes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_description: Text
    dimensions: list[Dimension] = Field(min_length=len(DIMENSIONS), max_length=len(DIMENSIONS))
    key_strengths: list[Text] = Field(min_length=2, max_length=3)
    priority_improvements: list[Text] = Field(min_length=2, max_length=3)
    technical_notes: Text

    @field_validator("dimensions")
    @classmethod
    def _each_dimension_once_in_order(cls, dims: list[Dimension]) -> list[Dimension]:
        names = tuple(d.name for d in dims)
        if names != DIMENSIONS:
            raise ValueError(f"dimensions must be {list(DIMENSIONS)} in order, got {list(names)}")
        return dims


class Analysis(GeneratedAnalysis):
    """The stored critique: the generated fields plus `overall_score` and the schema version."""

    overall_score: float = Field(ge=SCORE_MIN, le=SCORE_MAX)
    schema_version: str = SCHEMA_VERSION

    @model_validator(mode="after")
    def _overall_is_mean(self) -> Analysis:
        if abs(self.overall_score - overall_score(self.dimensions)) > 0.006:
            raise ValueError("overall_score must be the mean of the dimension scores")
        return self

    @classmethod
    def from_generated(cls, generated: GeneratedAnalysis) -> Analysis:
        return cls(**generated.model_dump(), overall_score=overall_score(generated.dimensions))


def overall_score(dimensions: list[Dimension]) -> float:
    """Mean of the dimension scores, rounded to two decimals."""
    return round(sum(d.score for d in dimensions) / len(dimensions), 2)


def generation_schema(text_limit: int = DEFAULT_TEXT_LIMIT) -> dict[str, Any]:
    """JSON schema that constrained decoding enforces.

    Dimension names are fixed per position (prefixItems + const) so a weak model cannot
    repeat or misspell one; strings and arrays are bounded so it cannot run away.
    """
    text = {"type": "string", "minLength": 1, "maxLength": text_limit}
    short = {"type": "string", "minLength": 1, "maxLength": max(16, text_limit // 2)}

    def dimension(name: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "name": {"const": name},
                "score": {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX},
                "comment": text,
                "recommendation": text,
            },
            "required": ["name", "score", "comment", "recommendation"],
            "additionalProperties": False,
        }

    bullets = {"type": "array", "items": short, "minItems": 2, "maxItems": 3}
    return {
        "type": "object",
        "properties": {
            "image_description": text,
            "dimensions": {
                "type": "array",
                "prefixItems": [dimension(n) for n in DIMENSIONS],
                "items": False,
                "minItems": len(DIMENSIONS),
                "maxItems": len(DIMENSIONS),
            },
            "key_strengths": bullets,
            "priority_improvements": bullets,
            "technical_notes": text,
        },
        "required": [
            "image_description",
            "dimensions",
            "key_strengths",
            "priority_improvements",
            "technical_notes",
        ],
        "additionalProperties": False,
    }
