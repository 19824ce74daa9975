"""Image input: paths confined to the allowed roots, byte and pixel limits, a Pillow decode."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from jobs.errors import InvalidImage

PATH_PREFIX = "path:"
STORED_PREFIX = "sha256:"


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    max_side: int


@dataclass(frozen=True)
class CheckedImage:
    """Bytes that decode to a usable image, with their digest and where they come from."""

    data: bytes
    sha256: str
    width: int
    height: int
    format: str
    ref: str  # "path:/abs/file" or "sha256:<hex>" (stored in the images table)

    @property
    def is_stored(self) -> bool:
        return self.ref.startswith(STORED_PREFIX)


def confine(path: str | Path, roots: list[Path]) -> Path:
    """Resolve `path` (symlinks included) and require it to lie under one of `roots`."""
    if not roots:
        raise InvalidImage(
            "Image paths are disabled: set ADVISOR_IMAGE_ROOTS to the directories clients may "
            "read from, or send the image bytes inline"
        )
    raw = Path(path)
    if ".." in raw.parts:
        raise InvalidImage(
            f"Image path {str(path)!r} contains '..'; give a path inside {_names(roots)}"
        )
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        resolved = candidate.resolve()
        for root in roots:
            if resolved.is_relative_to(root.resolve()):
                return resolved
    raise InvalidImage(
        f"Image path {str(path)!r} is outside the allowed roots {_names(roots)} "
        "(symlinks are resolved first)"
    )


def _names(roots: list[Path]) -> list[str]:
    return [str(r) for r in roots]


def read_path(path: str | Path, roots: list[Path], limits: Limits) -> bytes:
    resolved = confine(path, roots)
    if not resolved.is_file():
        raise InvalidImage(f"Image {str(path)!r} not found under the allowed roots")
    size = resolved.stat().st_size
    if size > limits.max_bytes:
        raise InvalidImage(f"Image {str(path)!r} is {size} bytes; the limit is {limits.max_bytes}")
    return resolved.read_bytes()


def decode_base64(text: str, limits: Limits) -> bytes:
    # 4 base64 characters carry 3 bytes; refuse before decoding a huge string.
    if len(text) * 3 // 4 > limits.max_bytes + 3:
        raise InvalidImage(f"Inline image exceeds the {limits.max_bytes}-byte limit")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"Inline image is not valid base64: {exc}") from exc


def verify(data: bytes, limits: Limits, ref: str | None = None) -> CheckedImage:
    """Check size, header-declared pixels (before decoding, against bombs) and a full decode."""
    if not data:
        raise InvalidImage("Image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"Image is {len(data)} bytes; the limit is {limits.max_bytes}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise InvalidImage(
                    f"Image is {width}x{height} = {width * height} pixels; the limit is "
                    f"{limits.max_pixels} (ADVISOR_MAX_IMAGE_PIXELS)"
                )
            fmt = img.format or "unknown"
            with warnings.catch_warnings():
                # Our own pixel limit is stricter; Pillow's bomb warning would be noise here.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage(
            f"Image has too many pixels ({exc}); the limit is {limits.max_pixels} "
            "(ADVISOR_MAX_IMAGE_PIXELS)"
        ) from exc
    except UnidentifiedImageError as exc:
        # Pillow's own message names the BytesIO object's address: no use to the sender.
        raise InvalidImage(
            f"Image format not recognised ({len(data)} bytes); send a JPEG, PNG or WebP"
        ) from exc
    except (
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise InvalidImage(
            f"Image cannot be decoded ({type(exc).__name__}: {exc}); send a JPEG, PNG or WebP"
        ) from exc
    return CheckedImage(data, sha, width, height, fmt, ref or f"{STORED_PREFIX}{sha}")


def load_for_model(data: bytes, limits: Limits) -> Image.Image:
    """Decode to RGB and shrink so the longest side is at most `max_side`."""
    verify(data, limits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img: Image.Image = Image.open(io.BytesIO(data))
        img.load()
    img = img.convert("RGB")
    if max(img.size) > limits.max_side:
        img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    return img
