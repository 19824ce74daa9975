"""Submit inputs: what a caller may pass, checked completely before anything is written."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from jobs.advisors import get_persona
from jobs.contracts import (
    MAX_IMAGE_PATH,
    NAME_WIDTH,
    NOTIFY_QUEUE_PREFIX,
    DeliveryKind,
    is_notify_queue,
    is_notify_task_name,
    is_storable_text,
)
from jobs.errors import CallbackRefused, InvalidImage
from jobs.settings import Settings
from notices.webhooks import CallbackPolicy
from photos.intake import CheckedImage, Limits, ModelGeometry, confine, read_path, verify
from producers.errors import InvalidSubmission
from store.submissions import NewDelivery

ImageInput = str | Path | bytes | bytearray | memoryview | Image.Image


@dataclass(frozen=True)
class SubmitItem:
    """One job to submit: an image (path, bytes or PIL image) and an advisor."""

    image: ImageInput
    advisor: str
    subject: str | None = None
    variant: str | None = None
    idempotency_key: str | None = None
    # Outcome notices: a Celery task `notify` published to `notify_queue`, a signed webhook.
    notify: str | None = None
    notify_queue: str | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class CheckedItem:
    item: SubmitItem
    image: CheckedImage
    subject: str
    deliveries: tuple[NewDelivery, ...] = ()


def geometry_of(settings: Settings) -> ModelGeometry:
    """The model's image size as far as a producer knows it (the worker adds its processor's)."""
    return ModelGeometry(settings.model_image_pixels)


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
    """Paths are confined to ADVISOR_IMAGE_ROOTS and read once, here; every image is then
    stored like an upload (location and serials removed), so no worker needs the roots.

    Every image goes through the worker's own intake pipeline here, so a photo the worker
    would refuse is refused at submit, before a row exists.
    """
    limits, geometry = Limits.of(settings), geometry_of(settings)
    if isinstance(image, str | Path):
        text = str(image)
        if not text or len(text) > MAX_IMAGE_PATH or not is_storable_text(text):
            raise InvalidImage(
                f"Image path {text[:80]!r} must be 1 to {MAX_IMAGE_PATH} characters without "
                "control characters"
            )
        resolved = confine(image, settings.image_roots)
        data = read_path(resolved, settings.image_roots, limits)
        return verify(data, limits, geometry, name=resolved.name)
    if isinstance(image, Image.Image):
        # PNG keeps every pixel, and the image's colour profile and EXIF travel with it.
        buffer = io.BytesIO()
        extra = {k: image.info[k] for k in ("icc_profile", "exif") if image.info.get(k)}
        try:
            image.save(buffer, format="PNG", **extra)
        except (OSError, ValueError) as exc:
            raise InvalidImage(f"PIL image cannot be encoded as PNG: {exc}") from exc
        return verify(buffer.getvalue(), limits, geometry)
    if isinstance(image, bytes | bytearray | memoryview):
        return verify(bytes(image), limits, geometry)
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


def check_deliveries(
    item: SubmitItem, settings: Settings, policy: CallbackPolicy
) -> tuple[NewDelivery, ...]:
    """The notices `item` asks for; the callback URL is resolved and checked now (and again
    when it is called)."""
    deliveries: list[NewDelivery] = []
    if item.notify is not None or item.notify_queue is not None:
        if not is_notify_task_name(item.notify):
            raise InvalidSubmission(
                f"notify {str(item.notify)[:100]!r}: give both notify (a task name such as "
                "app.critique_done: a letter, then letters, digits and _ . : -, up to 100) and "
                f"notify_queue ({NOTIFY_QUEUE_PREFIX}NAME)"
            )
        if not is_notify_queue(item.notify_queue):
            raise InvalidSubmission(
                f"notify_queue {str(item.notify_queue)[:100]!r}: give both notify and "
                f"notify_queue, a queue named {NOTIFY_QUEUE_PREFIX}NAME (NAME: a letter, then "
                "letters, digits and _ . : -, up to 100), e.g. advisor.notify.myapp"
            )
        assert item.notify is not None and item.notify_queue is not None
        deliveries.append(NewDelivery(DeliveryKind.TASK, item.notify, item.notify_queue))
    if item.callback_url is not None:
        if not isinstance(item.callback_url, str):
            raise CallbackRefused(f"callback_url must be a string, not {item.callback_url!r}")
        secret = settings.webhook_secret
        if secret is None or not secret.get_secret_value():
            raise CallbackRefused(
                "Webhooks are off: set ADVISOR_WEBHOOK_SECRET, the key their signatures use"
            )
        policy.check(item.callback_url)
        deliveries.append(NewDelivery(DeliveryKind.WEBHOOK, item.callback_url))
    return tuple(deliveries)


def check_item(item: SubmitItem, settings: Settings, policy: CallbackPolicy) -> CheckedItem:
    """Advisor, subject, key, notices and image; raises before any row or message exists."""
    if not isinstance(item.advisor, str):
        raise InvalidSubmission(f"advisor must be a string, got {type(item.advisor).__name__}")
    get_persona(item.advisor)
    check_text(item.subject, "subject", NAME_WIDTH)
    check_text(item.idempotency_key, "idempotency_key", NAME_WIDTH)
    if item.variant is not None:
        check_text(item.variant, "variant", 63)
    deliveries = check_deliveries(item, settings, policy)
    image = check_image(item.image, settings)
    return CheckedItem(item, image, item.subject or image.sha256, deliveries)
