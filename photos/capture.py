"""Capture facts from EXIF, by a whitelist of tags: never GPS, serial numbers or maker notes."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

# The only tags ever read. GPS (IFD 0x8825), BodySerialNumber (0xA431), LensSerialNumber
# (0xA435), CameraOwnerName (0xA430) and MakerNote (0x927C) are deliberately absent.
_IFD0_MAKE, _IFD0_MODEL = 0x010F, 0x0110
_EXIF_IFD = 0x8769
_EXPOSURE_TIME, _F_NUMBER, _ISO = 0x829A, 0x829D, 0x8827
_DATE_ORIGINAL, _DATE_DIGITIZED, _OFFSET_ORIGINAL = 0x9003, 0x9004, 0x9011
_FOCAL_LENGTH, _FOCAL_35MM = 0x920A, 0xA405
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434

MAX_TEXT = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class Capture:
    """How the photo was taken, as its EXIF says; None where the file does not say."""

    make: str | None = None
    model: str | None = None
    lens: str | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: int | None = None
    aperture: float | None = None  # the f-number
    exposure_time_s: float | None = None
    iso: int | None = None
    captured_at: str | None = None  # ISO 8601, with the UTC offset when the file gives one

    @property
    def is_empty(self) -> bool:
        return all(value is None for value in vars(self).values())

    def to_dict(self) -> dict[str, Any]:
        # The fields are plain values: a copy of them, not asdict's deep copy (once per submit).
        return dict(vars(self))


def read_capture(exif: Image.Exif) -> Capture:
    """The whitelisted tags of `exif`; an unreadable Exif IFD yields the IFD0 facts alone."""
    if not exif:
        return Capture()  # most uploads from apps: nothing to read
    try:
        sub: dict[int, Any] = dict(exif.get_ifd(_EXIF_IFD))
    except (OSError, ValueError, SyntaxError, TypeError, KeyError) as exc:
        # The tag values are not logged: they could be anything the sender wrote.
        logger.warning("Exif IFD unreadable (%s); capture facts limited", type(exc).__name__)
        sub = {}

    def tag(key: int) -> Any:
        # Some writers put Exif-IFD tags in IFD0; the same whitelisted id is read from either.
        value = sub.get(key)
        return exif.get(key) if value is None else value

    make, model = _text(exif.get(_IFD0_MAKE)), _text(exif.get(_IFD0_MODEL))
    lens = _text(tag(_LENS_MODEL))
    lens_make = _text(tag(_LENS_MAKE))
    if lens and lens_make and not lens.lower().startswith(lens_make.lower()):
        lens = f"{lens_make} {lens}"[:MAX_TEXT]
    focal = _number(tag(_FOCAL_LENGTH))
    focal_35 = _number(tag(_FOCAL_35MM))
    iso = _number(tag(_ISO))
    return Capture(
        make=make,
        model=model,
        lens=lens,
        focal_length_mm=round(focal, 2) if focal else None,
        focal_length_35mm=int(focal_35) if focal_35 else None,
        aperture=round(f, 2) if (f := _number(tag(_F_NUMBER))) else None,
        exposure_time_s=_exposure(tag(_EXPOSURE_TIME)),
        iso=int(iso) if iso and iso < 10_000_000 else None,
        captured_at=_captured_at(
            tag(_DATE_ORIGINAL) or tag(_DATE_DIGITIZED), tag(_OFFSET_ORIGINAL)
        ),
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    cleaned = " ".join(_CONTROL.sub(" ", value).split())
    return cleaned[:MAX_TEXT] or None


def _number(value: Any) -> float | None:
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _exposure(value: Any) -> float | None:
    seconds = _number(value)
    if seconds is None or seconds > 3600:
        return None
    return float(f"{seconds:.6g}")


def _captured_at(value: Any, offset: Any) -> str | None:
    text = _text(value)
    match = _EXIF_DATE.match(text or "")
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    zone = _text(offset)
    stamp = moment.isoformat()
    return f"{stamp}{zone}" if zone and _OFFSET.match(zone) else stamp
