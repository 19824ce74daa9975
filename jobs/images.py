"""Image input: paths confined to the allowed roots, byte and pixel limits, a format
allowlist by signature, then a Pillow decode."""

from __future__ import annotations

import binascii
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from jobs.errors import InvalidImage, UnsupportedFormat

PATH_PREFIX = "path:"
STORED_PREFIX = "sha256:"

# Pillow plugin ids of the formats that may reach a decoder, and how people call them.
JPEG, PNG, WEBP = "JPEG", "PNG", "WEBP"
ACCEPTED: tuple[str, ...] = ("JPEG", "PNG", "WebP")
SEND_ACCEPTED = "send a JPEG, PNG or WebP"
# Formats Pillow could open (some through Ghostscript or with known parser bugs), refused by
# name so the sender learns what they sent.
_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF-", "PDF"),
    (b"8BPS", "PSD (Photoshop)"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"gimp xcf", "XCF (GIMP)"),
    (b"SIMPLE  =", "FITS"),
    (b"PK\x03\x04", "ZIP"),
    (b"<?xml", "XML/SVG"),
    (b"<svg", "SVG"),
)


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


def sniff_format(data: bytes) -> str:
    """The Pillow format id of `data`, decided from its first bytes; refuses all others.

    The one allowlist: nothing reaches a decoder unless this function names its format.
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            raise UnsupportedFormat(
                f"{name} is not accepted; {SEND_ACCEPTED}", detected=name, accepted=ACCEPTED
            )
    raise UnsupportedFormat(
        f"Image format not recognised ({len(data)} bytes); {SEND_ACCEPTED}",
        detected="unknown",
        accepted=ACCEPTED,
    )


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
            raise InvalidImage(f"Image {str(path)[:200]!r} not found under the allowed roots")
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


def verify(data: bytes, limits: Limits, ref: str | None = None) -> CheckedImage:
    """Check size, header-declared pixels (before decoding, against bombs) and a full decode."""
    if not data:
        raise InvalidImage("Image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"Image is {len(data)} bytes; the limit is {limits.max_bytes}")
    sha = hashlib.sha256(data).hexdigest()
    allowed = sniff_format(data)
    try:
        with Image.open(io.BytesIO(data), formats=[allowed]) as img:
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
            f"Image cannot be decoded as {allowed} ({len(data)} bytes); {SEND_ACCEPTED}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InvalidImage(
            f"Image cannot be decoded ({type(exc).__name__}: {exc}); {SEND_ACCEPTED}"
        ) from exc
    return CheckedImage(data, sha, width, height, fmt, ref or f"{STORED_PREFIX}{sha}")


def load_for_model(data: bytes, limits: Limits) -> Image.Image:
    """Decode to RGB and shrink so the longest side is at most `max_side`."""
    checked = verify(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=[checked.format])
            img.load()
        img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InvalidImage(f"Image cannot be converted to RGB ({_why(exc)})") from exc
    if max(img.size) > limits.max_side:
        img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    return img
