"""Pixels to 8-bit sRGB: bit depth, palette, alpha on white, and ICC profiles via LittleCMS."""

from __future__ import annotations

import functools
import io
import logging

import numpy as np
from PIL import Image, ImageCms

from jobs.errors import InvalidImage

logger = logging.getLogger(__name__)

# Perceptual is the ICC's intent for photographs: LUT profiles (CMYK) compress their gamut
# instead of clipping it; matrix profiles (Display P3, Adobe RGB) have no perceptual table,
# so LittleCMS maps them colorimetrically and out-of-sRGB colours clip.
INTENT = ImageCms.Intent.PERCEPTUAL
# Transparent pixels show the background they would have on a page: white.
BACKGROUND = (255, 255, 255)
ASSUMED_SRGB = "none (taken as sRGB)"
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def to_srgb(image: Image.Image) -> tuple[Image.Image, str]:
    """The image as 8-bit RGB in sRGB, and a description of the profile it was converted from."""
    icc = image.info.get("icc_profile") or None
    flat = _flatten(image)
    if icc is None:
        if flat.mode == "CMYK":
            # LittleCMS has no built-in CMYK space; Pillow's formula is the recorded fallback.
            return flat.convert("RGB"), "none (CMYK converted without a profile)"
        return flat.convert("RGB"), ASSUMED_SRGB
    try:
        description, transform = _transform(bytes(icc), flat.mode)
    except (ImageCms.PyCMSError, OSError) as exc:
        # Garbage or a profile for another colour space: the pixels are still the photo.
        logger.warning("Embedded ICC profile ignored: %s", exc)
        fallback = "none (CMYK converted without a profile)" if flat.mode == "CMYK" else "sRGB"
        return flat.convert("RGB"), f"unusable embedded profile ignored; taken as {fallback}"
    return transform.apply(flat), description


def _flatten(image: Image.Image) -> Image.Image:
    """8-bit L, RGB or CMYK: 16-bit scaled (not clipped), palettes expanded, alpha on white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        levels = np.asarray(image, dtype=np.uint32).clip(0, 65535)
        return Image.fromarray(((levels * 255 + 32767) // 65535).astype(np.uint8), "L")
    if mode == "F":
        raise InvalidImage("Floating-point images are not accepted; export 8- or 16-bit")
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("LA", "La", "RGBA", "RGBa"):
        straight = image.convert("LA" if mode.startswith("L") else "RGBA")
        base = Image.new(straight.mode[:-1], straight.size, BACKGROUND[: len(straight.mode) - 1])
        base.paste(straight, mask=straight.getchannel("A"))
        return base
    if mode in ("L", "RGB", "CMYK"):
        return image
    if mode in ("RGBX", "YCbCr"):
        return image.convert("RGB")
    raise InvalidImage(f"Pixel mode {mode} is not supported; export RGB or greyscale")


@functools.lru_cache(maxsize=32)
def _transform(icc: bytes, mode: str) -> tuple[str, ImageCms.ImageCmsTransform]:
    """One transform per (profile, mode): phones reuse a handful of profiles."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    description = " ".join(ImageCms.getProfileDescription(source).split())[:64] or "unnamed"
    # No cache flag: LittleCMS's one-pixel cache is shared state, and gateways convert on
    # several threads at once.
    transform = ImageCms.buildTransform(
        source, _SRGB, mode, "RGB", INTENT, flags=ImageCms.Flags.NOCACHE
    )
    return description, transform
