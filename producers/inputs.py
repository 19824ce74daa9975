"""Submit inputs: what a caller may pass, checked completely before anything is written."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from jobs.advisors import get_persona
from jobs.contracts import is_storable_text
from jobs.errors import InvalidImage
from jobs.images import PATH_PREFIX, CheckedImage, Limits, confine, read_path, verify
from jobs.settings import Settings
from producers.errors import InvalidSubmission

ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image

MAX_SUBJECT = 200  # jobs.subject column width
MAX_IDEMPOTENCY_KEY = 200  # jobs.idempotency_key column width
MAX_IMAGE_PATH = 4000  # jobs.image_ref column width, less the "path:" prefix


@dataclass(frozen=True)
class SubmitItem:
    """One job to submit: an image (path, bytes or PIL image) and an advisor."""

    image: ImageInput
    advisor: str
    subject: str | None = None
    variant: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class CheckedItem:
    item: SubmitItem
    image: CheckedImage
    subject: str


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_image_bytes, settings.max_image_pixels, settings.max_image_side)


def as_item(raw: SubmitItem | Mapping[str, Any]) -> SubmitItem:
    if isinstance(raw, SubmitItem):
        return raw
    if isinstance(raw, Mapping):
        try:
            return SubmitItem(**raw)
        except TypeError as exc:
            raise InvalidSubmission(f"Submit item {dict(raw)!r}: {exc}") from exc
    raise InvalidSubmission(f"Submit items are SubmitItem or dicts, not {type(raw).__name__}")


def check_image(image: ImageInput, settings: Settings) -> CheckedImage:
    """Paths are confined to ADVISOR_IMAGE_ROOTS and referenced; anything else is stored inline."""
    limits = limits_of(settings)
    if isinstance(image, str | Path):
        text = str(image)
        if not text or len(text) > MAX_IMAGE_PATH or not is_storable_text(text):
            raise InvalidImage(
                f"Image path {text[:80]!r} must be 1 to {MAX_IMAGE_PATH} characters without "
                "control characters"
            )
        resolved = confine(image, settings.image_roots)
        data = read_path(resolved, settings.image_roots, limits)
        return verify(data, limits, ref=f"{PATH_PREFIX}{resolved}")
    if isinstance(image, Image.Image):
        # PNG keeps every pixel; the worker decodes it like any upload.
        buffer = io.BytesIO()
        try:
            image.save(buffer, format="PNG")
        except (OSError, ValueError) as exc:
            raise InvalidImage(f"PIL image cannot be encoded as PNG: {exc}") from exc
        return verify(buffer.getvalue(), limits)
    if isinstance(image, bytes | bytearray | memoryview):
        return verify(bytes(image), limits)
    raise InvalidImage(f"Image must be a path, bytes or a PIL image, not {type(image).__name__}")


def check_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidSubmission(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise InvalidSubmission(f"{what} is {len(value)} characters; the limit is {limit}")
    if not is_storable_text(value):
        raise InvalidSubmission(
            f"{what} {value[:40]!r} contains control characters or invalid UTF-8 (lone "
            "surrogates); send printable text"
        )
    return value


def check_item(item: SubmitItem, settings: Settings) -> CheckedItem:
    """Advisor, subject, key and image; raises before any row or message exists."""
    if not isinstance(item.advisor, str):
        raise InvalidSubmission(f"advisor must be a string, got {type(item.advisor).__name__}")
    get_persona(item.advisor)
    check_text(item.subject, "subject", MAX_SUBJECT)
    check_text(item.idempotency_key, "idempotency_key", MAX_IDEMPOTENCY_KEY)
    if item.variant is not None:
        check_text(item.variant, "variant", 63)
    image = check_image(item.image, settings)
    return CheckedItem(item, image, item.subject or image.sha256)
