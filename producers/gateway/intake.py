"""POST /analyze bodies (JSON with a path or base64, or a multipart upload) -> SubmitItem."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from jobs.errors import InvalidImage
from jobs.settings import Settings
from photos.formats import accepted_list
from photos.intake import Limits, decode_base64
from producers.gateway.errors import (
    BodyTooLarge,
    InvalidBase64,
    InvalidBody,
    InvalidInput,
    UnsupportedMediaType,
)
from producers.gateway.schemas import AnalyzeSubmission, SubmissionFields
from producers.inputs import SubmitItem

JSON_TYPES = ("application/json",)
MULTIPART = "multipart/form-data"
# An upload may be labelled generically; its bytes are decoded and checked either way.
GENERIC_UPLOAD_TYPES = ("application/octet-stream", "")
MAX_FORM_FIELDS = 16


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_submission(request: Request, settings: Settings) -> SubmitItem:
    """The job the body asks for; raises a GatewayError naming what is wrong with it."""
    media = media_type(request)
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        # Parsing and base64-decoding megabytes takes a while: off the event loop.
        return await run_in_threadpool(_from_json, await request.body(), settings)
    if media == MULTIPART:
        return await _from_multipart(request, settings)
    raise UnsupportedMediaType(
        f"Content-Type {media or '(none)'!r} is not accepted: send application/json "
        '({"image": PATH, "advisor": ...} or {"image_base64": ..., "advisor": ...}) '
        "or multipart/form-data (a `file` part and form fields)"
    )


def _validated(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=data) from exc


def _from_json(raw: bytes, settings: Settings) -> SubmitItem:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"The body is not valid JSON: {str(exc)[:200]}") from exc
    except RecursionError as exc:
        raise InvalidBody("The body is not valid JSON: nested too deeply") from exc
    body: AnalyzeSubmission = _validated(AnalyzeSubmission, data)
    image: str | bytes
    if body.image_base64 is not None:
        image = image_from_base64(body.image_base64, settings)
    else:
        assert body.image is not None
        image = body.image
    return _item(image, body)


def image_from_base64(text: str, settings: Settings) -> bytes:
    """Whitespace (wrapped lines) and a `data:...;base64,` prefix are tolerated."""
    if text.startswith("data:"):
        comma = text.find(",", 0, 200)
        if comma > 0:
            text = text[comma + 1 :]
    limit = settings.max_image_bytes
    # A cheap upper bound first: whitespace only makes the image smaller than this.
    if len(text) // 4 * 3 > 2 * limit + 3:
        raise BodyTooLarge(
            f"The inline image exceeds the {limit}-byte limit (ADVISOR_MAX_IMAGE_BYTES)",
            limit=limit,
        )
    try:
        return decode_base64(text, Limits.of(settings))
    except InvalidImage as exc:
        if "byte limit" in str(exc):
            raise BodyTooLarge(
                f"The inline image exceeds the {limit}-byte limit (ADVISOR_MAX_IMAGE_BYTES)",
                limit=limit,
            ) from exc
        raise InvalidBase64(f"image_base64 is not valid base64 ({exc})") from exc


async def _from_multipart(request: Request, settings: Settings) -> SubmitItem:
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except (HTTPException, MultiPartException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise InvalidBody(f"The multipart body cannot be parsed: {detail}") from exc
    try:
        upload = form.get("file")
        path = form.get("image")
        fields = {k: v for k, v in form.multi_items() if k not in ("file", "image")}
        if any(not isinstance(v, str) for v in fields.values()):
            raise InvalidInput("Only the `file` part may be a file; send the others as fields")
        body: SubmissionFields = _validated(SubmissionFields, fields)
        if isinstance(upload, UploadFile) and path is None:
            return _item(await _upload_bytes(upload), body)
        if isinstance(path, str) and upload is None:
            _validated(AnalyzeSubmission, {"image": path, **fields})
            return _item(path, body)
        raise InvalidInput("Send exactly one image: a `file` part, or an `image` path field")
    finally:
        await form.close()


async def _upload_bytes(upload: UploadFile) -> bytes:
    kind = (upload.content_type or "").split(";", 1)[0].strip().lower()
    if not kind.startswith("image/") and kind not in GENERIC_UPLOAD_TYPES:
        raise UnsupportedMediaType(
            f"Upload {upload.filename!r} is {kind}, not an image: send {accepted_list()}"
        )
    return await upload.read()


def _item(image: str | bytes, body: SubmissionFields) -> SubmitItem:
    return SubmitItem(
        image, body.advisor, body.subject, body.variant, body.idempotency_key, body.notify,
        body.notify_queue, body.callback_url,
    )  # fmt: skip
