"""The photo intake pipeline, one for producers and workers: bytes in, the model's image out.

Order: byte limit, format allowlist by signature (before any decoder), header pixel check
(against bombs), one decode, EXIF orientation, ICC -> sRGB with alpha and bit depth
flattened, capture facts by a tag whitelist, then the model's pixel budget. An inline
upload is stored without its location and serial numbers (`privacy`).
"""

from __future__ import annotations

import binascii
import hashlib
import io
import logging
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pillow_heif
from PIL import Image, UnidentifiedImageError, features

from jobs.contracts import STORED_PREFIX
from jobs.errors import InvalidImage
from jobs.settings import Settings
from photos import formats, privacy
from photos.capture import Capture, read_capture
from photos.colour import to_srgb
from photos.formats import AVIF, HEIF, JPEG, PNG, TIFF, WEBP

# Qwen3-VL: 16-pixel patches merged 2x2, so one image token per 32x32 pixels.
PATCH_FACTOR = 32
MAX_ASPECT = 200  # the Qwen-VL processors refuse anything longer

# Pillow's TIFF parser logs every tag it reads, values included, at DEBUG: EXIF GPS and
# serial numbers must never reach a log, whatever ADVISOR_LOG_LEVEL says.
logging.getLogger("PIL").setLevel(logging.INFO)
# HEIC/HEIF through libheif; the primary image only (no thumbnails, depth or aux images).
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Frames beyond the first are animation or pages here; in JPEG (MPF) and HEIF they are
# gain maps, depth or bursts next to a primary image, which is the photo.
_STILL_ONLY = {PNG: "animated PNG", WEBP: "animated WebP", TIFF: "multi-page TIFF",
               AVIF: "AVIF image sequence"}  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The configured limits, the same at submit and in the worker."""
        return cls(settings.max_image_bytes, settings.max_image_pixels)


@dataclass(frozen=True)
class ModelGeometry:
    """How the model takes an image: at most `max_pixels`, sides in multiples of `factor`."""

    max_pixels: int
    factor: int = PATCH_FACTOR
    min_pixels: int = 0


@dataclass(frozen=True)
class Photo:
    """What intake learned about a photo; stored with the job (`photo` column)."""

    format: str
    width: int  # as displayed, after orientation; full resolution
    height: int
    orientation_applied: int  # the EXIF orientation (1-8) undone; 1: stored upright
    color_profile: str  # the embedded ICC profile converted from, or how none was handled
    capture: Capture

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "width": self.width, "height": self.height,
            "orientation_applied": self.orientation_applied,
            "color_profile": self.color_profile, "capture": self.capture.to_dict(),
        }  # fmt: skip


@dataclass(frozen=True)
class Prepared:
    """A photo and the exact RGB image the model gets (no metadata left on it)."""

    photo: Photo
    image: Image.Image
    is_private: bool = False  # the file's EXIF has GPS, serial numbers, owner or maker notes


@dataclass(frozen=True)
class CheckedImage:
    """Bytes that went through intake, with their digest and where they come from."""

    data: bytes
    sha256: str
    photo: Photo
    ref: str  # "path:/abs/file" or "sha256:<hex>" (stored in the images table)

    @property
    def is_stored(self) -> bool:
        return self.ref.startswith(STORED_PREFIX)


def confine(path: str | Path, roots: list[Path]) -> Path:
    """Resolve `path` (symlinks included) and require it to lie under one of `roots`."""
    try:
        return _confine(path, roots)
    except (OSError, RuntimeError, ValueError) as exc:
        # A symlink loop (RuntimeError), an embedded NUL (ValueError), an unreadable directory.
        raise InvalidImage(
            f"Image path {str(path)[:200]!r} cannot be resolved: {_why(exc)}"
        ) from exc


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {reason}"


def _confine(path: str | Path, roots: list[Path]) -> Path:
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
    """The bytes of a confined file; every filesystem failure is an InvalidImage."""
    resolved = confine(path, roots)
    try:
        if not resolved.is_file():
            raise InvalidImage(
                f"Image {str(path)[:200]!r} not found under the allowed roots "
                f"{_names(roots)}; give a path relative to one of them, or send the bytes inline"
            )
        size = resolved.stat().st_size
        if size > limits.max_bytes:
            raise InvalidImage(
                f"Image {str(path)[:200]!r} is {size} bytes; the limit is {limits.max_bytes}"
            )
        with resolved.open("rb") as handle:
            # Read one byte past the limit: a file growing after a stat cannot slip through.
            data = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise InvalidImage(f"Image {str(path)[:200]!r} cannot be read: {_why(exc)}") from exc
    if len(data) > limits.max_bytes:
        raise InvalidImage(
            f"Image {str(path)[:200]!r} is over {limits.max_bytes} bytes; the limit is "
            f"{limits.max_bytes}"
        )
    return data


# Whitespace that wrapped base64 (76-character lines) may carry; removed in one C pass.
_BASE64_SPACE = b" \t\r\n\x0b\x0c"


def decode_base64(text: str | bytes, limits: Limits) -> bytes:
    """Strict base64 (whitespace allowed) to bytes, in a few linear copies, never a list of
    chunks: peak memory stays within a small multiple of the input."""
    try:
        raw = text.encode("ascii") if isinstance(text, str) else text
    except UnicodeEncodeError as exc:
        raise InvalidImage("Inline image is not valid base64: non-ASCII characters") from exc
    compact = raw.translate(None, _BASE64_SPACE)
    del raw
    # 4 base64 characters carry 3 bytes; refuse before decoding a huge string.
    if len(compact) * 3 // 4 > limits.max_bytes + 3:
        raise InvalidImage(f"Inline image exceeds the {limits.max_bytes}-byte limit")
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"Inline image is not valid base64: {exc}") from exc


def model_size(width: int, height: int, geometry: ModelGeometry) -> tuple[int, int]:
    """(width, height) the model gets: Qwen-VL's smart_resize, made a size it keeps as is."""
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidImage(
            f"Image is {width}x{height}, more than {MAX_ASPECT}:1; the model takes nothing "
            "that long: crop it"
        )
    f = geometry.factor
    w, h = max(f, round(width / f) * f), max(f, round(height / f) * f)
    if w * h > geometry.max_pixels:
        beta = math.sqrt(width * height / geometry.max_pixels)
        w = max(f, math.floor(width / beta / f) * f)
        h = max(f, math.floor(height / beta / f) * f)
    elif w * h < geometry.min_pixels:
        beta = math.sqrt(geometry.min_pixels / (width * height))
        w, h = math.ceil(width * beta / f) * f, math.ceil(height * beta / f) * f
    if w * h > geometry.max_pixels:
        # A panorama's short side stuck at one patch: shorten the long one to fit.
        if w >= h:
            w = max(f, geometry.max_pixels // h // f * f)
        else:
            h = max(f, geometry.max_pixels // w // f * f)
    return w, h


def image_tokens(width: int, height: int, geometry: ModelGeometry) -> int:
    """Image tokens of a model-sized image: one per factor x factor pixels."""
    return (width // geometry.factor) * (height // geometry.factor)


def verify(
    data: bytes,
    limits: Limits,
    geometry: ModelGeometry,
    ref: str | None = None,
    name: str | None = None,
) -> CheckedImage:
    """The producer's intake: the whole pipeline (so bad photos fail at submit), digest and ref.

    Without `ref` the bytes are to be stored: they come back without location and serial
    numbers, and the digest is theirs.
    """
    # The model-sized pixels are the worker's: here the size is checked, not made.
    prepared = prepare(data, limits, geometry, name=name, sized=False)
    if ref is None:
        data = _storable(data, prepared, limits, geometry, name)
    sha = hashlib.sha256(data).hexdigest()
    return CheckedImage(data, sha, prepared.photo, ref or f"{STORED_PREFIX}{sha}")


def _storable(
    data: bytes, prepared: Prepared, limits: Limits, geometry: ModelGeometry, name: str | None
) -> bytes:
    """`data` scrubbed, proven to give the worker the same photo facts and the same pixels."""
    scrubbed = privacy.scrub(data, prepared.photo.format)
    if scrubbed is data and not prepared.is_private:
        return data
    if scrubbed is data:
        again = prepared
    else:
        again = prepare(scrubbed, limits, geometry, name=name, sized=False)
    size = model_size(prepared.photo.width, prepared.photo.height, geometry)
    if (
        again.is_private
        or again.photo != prepared.photo
        or _resized(again.image, size).tobytes() != _resized(prepared.image, size).tobytes()
    ):
        raise InvalidImage(
            f"This {prepared.photo.format} file's GPS or serial-number metadata cannot be "
            "removed without changing the photo, and it is never stored; remove it before "
            "sending (exiftool -gps:all= -serialnumber= -lensserialnumber= FILE), or send "
            "the file by path"
        )
    return scrubbed


def prepare(
    data: bytes,
    limits: Limits,
    geometry: ModelGeometry,
    *,
    name: str | None = None,
    sized: bool = True,
) -> Prepared:
    """The intake pipeline; raises InvalidImage (UnsupportedFormat for refused formats).

    `sized`: the image comes in the model's size; without it, upright sRGB at its decoded
    size (the model's size is still checked, so the same photos are refused)."""
    if not data:
        raise InvalidImage("Image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"Image is {len(data)} bytes; the limit is {limits.max_bytes}")
    fmt = formats.sniff(data, name)
    if fmt == AVIF and not features.check("avif"):
        raise InvalidImage("AVIF needs Pillow built with libavif (the wheels >= 11.3 are)")
    try:
        with warnings.catch_warnings():
            # Our pixel limit is stricter and checked below; Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                return _decode(img, fmt, limits, geometry, sized)
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
            f"Image starts like {fmt} but is not a readable {fmt} file ({len(data)} bytes): "
            "truncated or corrupt"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error) as exc:
        raise InvalidImage(
            f"{fmt} image cannot be decoded ({type(exc).__name__}: {exc}); "
            f"send one of: {formats.accepted_list()}"
        ) from exc


def _decode(
    img: Image.Image, fmt: str, limits: Limits, geometry: ModelGeometry, sized: bool
) -> Prepared:
    width, height = img.size
    if width * height > limits.max_pixels:
        raise InvalidImage(
            f"Image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_pixels} (ADVISOR_MAX_IMAGE_PIXELS)"
        )
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and fmt in _STILL_ONLY:
        raise formats.refuse(
            f"{_STILL_ONLY[fmt]} ({frames} frames)", ": export a single frame or page"
        )
    if fmt == JPEG:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale, still no smaller than the model's size.
        img.draft(None, model_size(width, height, geometry))
    # Pillow's TIFF plugin and libheif undo the orientation while decoding; remember it.
    decoded_upright = (
        img.info.get("original_orientation") if fmt == HEIF
        else img.tag_v2.get(_ORIENTATION_TAG) if fmt == TIFF  # type: ignore[attr-defined]
        else None
    )  # fmt: skip
    img.load()  # the one decode
    exif = img.getexif()
    pending = exif.get(_ORIENTATION_TAG, 1)
    image: Image.Image = img
    if pending in _TRANSPOSE:
        image = img.transpose(_TRANSPOSE[pending])
        if pending >= 5:
            width, height = height, width
        applied = int(pending)
    else:
        applied = int(decoded_upright) if decoded_upright in _TRANSPOSE else 1
    capture = read_capture(exif)
    srgb, profile = to_srgb(image)
    size = model_size(width, height, geometry)  # refuses what the model cannot take
    if sized:
        srgb = _resized(srgb, size)
    srgb.info = {}
    photo = Photo(fmt, width, height, applied, profile, capture)
    return Prepared(photo, srgb, privacy.is_private(exif))


def fit_for_model(image: Image.Image, geometry: ModelGeometry) -> Image.Image:
    """An already decoded image (warm-up, probes) as RGB in the model's size."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return _resized(rgb, model_size(rgb.width, rgb.height, geometry))


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    # A box reduce to 3x the size first, then Lanczos: a third of the time, the same look.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
