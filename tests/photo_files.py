"""Photo files as cameras, phones and editors write them, built by the tests themselves."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, TiffImagePlugin

from photos import intake  # noqa: F401 - registers the HEIF plugin used by save(..., "HEIF")
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".artifacts" / "photo-intake"

# Quadrant colours of the orientation test card, as it should look upright.
TOP_LEFT, TOP_RIGHT = (220, 30, 30), (30, 200, 40)
BOTTOM_LEFT, BOTTOM_RIGHT = (30, 50, 220), (240, 220, 30)
CARD_SIZE = (320, 192)  # landscape; a multiple of 32 each way, so the model keeps it

# Inverse of each EXIF orientation's transform: the stored pixels of an upright card.
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}

GPS_LATITUDE = (48, 51, 2964)  # degrees, minutes, hundredths of seconds: a Paris rooftop
SERIALS = ("SN-4815162342", "LENS-SN-108", "Owner Jane Q")
R = TiffImagePlugin.IFDRational


def card() -> Image.Image:
    """An upright landscape card with one distinct colour per quadrant."""
    width, height = CARD_SIZE
    img = Image.new("RGB", CARD_SIZE)
    for colour, (x, y) in zip(
        (TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT),
        ((0, 0), (width // 2, 0), (0, height // 2), (width // 2, height // 2)),
        strict=True,
    ):
        img.paste(colour, (x, y, x + width // 2, y + height // 2))
    return img


def quadrants(img: Image.Image) -> tuple[tuple[int, ...], ...]:
    """The colour at the centre of each quadrant: TL, TR, BL, BR."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    points = (
        (w // 4, h // 4),
        (3 * w // 4, h // 4),
        (w // 4, 3 * h // 4),
        (3 * w // 4, 3 * h // 4),
    )
    return tuple(tuple(rgb.getpixel(p)) for p in points)  # type: ignore[arg-type]


def is_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def exif(orientation: int | None = None, *, capture: bool = True, gps: bool = False) -> bytes:
    """EXIF as a phone writes it: camera, lens, exposure, time; optionally GPS and serials."""
    data = Image.Exif()
    if orientation is not None:
        data[0x0112] = orientation
    if capture:
        data[0x010F], data[0x0110] = "Canon", "Canon EOS R5"
        sub = {
            0x829A: R(1, 250), 0x829D: R(28, 10), 0x8827: 400, 0x920A: R(50, 1), 0xA405: 50,
            0xA433: "Canon", 0xA434: "RF50mm F1.8 STM", 0x9003: "2026:05:01 18:03:22",
            0x9011: "+02:00",
        }  # fmt: skip
        if gps:
            sub.update({0xA431: SERIALS[0], 0xA435: SERIALS[1], 0xA430: SERIALS[2]})
        data[0x8769] = sub
    if gps:
        lat = tuple(R(v, 100 if i == 2 else 1) for i, v in enumerate(GPS_LATITUDE))
        data[0x8825] = {1: "N", 2: lat, 3: "E", 4: (R(2, 1), R(17, 1), R(4008, 100))}
    return data.tobytes()


# The latitude's seconds as a file holds them: the rational 2964/100, in either byte order.
GPS_RATIONALS = (struct.pack(">II", GPS_LATITUDE[2], 100), struct.pack("<II", GPS_LATITUDE[2], 100))


def private_leftovers(data: bytes) -> list[str]:
    """What of the GPS, serials and owner of `exif(gps=True)` is still in a file: [] for none."""
    found = []
    with Image.open(io.BytesIO(data)) as img:
        tags = img.getexif()
        if 0x8825 in tags or tags.get_ifd(0x8825):
            found.append("GPS IFD")
        found += [f"tag {t:#x}" for t in (0xA430, 0xA431, 0xA435) if t in tags.get_ifd(0x8769)]
    raw = (*(s.encode() for s in SERIALS), *GPS_RATIONALS, b"48,51", b"GPS")
    return found + [repr(secret) for secret in raw if secret in data]


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    if fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
        options.setdefault("quality", 95)
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def oriented(fmt: str, orientation: int) -> bytes:
    """The card stored so that, shown with `orientation`, it is upright."""
    method = _STORE[orientation]
    stored = card() if method is None else card().transpose(method)
    return encode(stored, fmt, exif=exif(orientation))


def png16(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    """A 16-bit-per-channel RGB PNG of one colour (Pillow writes no 48-bit PNG itself)."""
    w, h = size
    row = b"\x00" + struct.pack(">HHH", *rgb) * w

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * h)) + chunk(b"IEND", b""))  # fmt: skip


def tiff16(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    """A 16-bit-per-channel RGB TIFF, uncompressed, as editors export for print."""
    w, h = size
    pixels = struct.pack("<HHH", *rgb) * (w * h)
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, -1), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, -2), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)),
               (284, 3, 1, 1)]  # fmt: skip
    bits_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, count, value in entries:
        value = {-1: bits_at, -2: bits_at + 6}.get(value, value)
        packed = (
            struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        )
        out += struct.pack("<HHI", tag, kind, count) + packed
    return bytes(out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + pixels)


def gray16(level: int, fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    return encode(Image.fromarray(np.full(size[::-1], level, dtype=np.uint16)), fmt)


# -- colour profiles ---------------------------------------------------------------------

_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])  # fmt: skip
_D50 = np.array([0.9642, 1.0, 0.8249])


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _s15(values: np.ndarray) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def display_p3_profile() -> bytes:
    """Apple's Display P3 (P3 primaries, D65, the sRGB curve) as an ICC v2 matrix profile."""
    primaries = np.stack([_xyz(0.680, 0.320), _xyz(0.265, 0.690), _xyz(0.150, 0.060)], axis=1)
    white = _xyz(0.3127, 0.3290)
    to_xyz = primaries * np.linalg.solve(primaries, white)
    cone = (_BRADFORD @ _D50) / (_BRADFORD @ white)
    adapted = np.linalg.inv(_BRADFORD) @ np.diag(cone) @ _BRADFORD @ to_xyz
    ramp = np.linspace(0, 1, 1024)
    curve = np.where(ramp <= 0.04045, ramp / 12.92, ((ramp + 0.055) / 1.055) ** 2.4)
    trc = (
        b"curv\0\0\0\0" + struct.pack(">I", 1024) + (curve * 65535).round().astype(">u2").tobytes()
    )
    name = b"Display P3"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(name) + 1) + name + b"\0"
            + b"\0" * 8 + b"\0\0" + b"\0" + b"\0" * 67)  # fmt: skip
    tags = [(b"desc", desc), (b"cprt", b"text\0\0\0\0Public domain\0"),
            (b"wtpt", b"XYZ \0\0\0\0" + _s15(_D50))]  # fmt: skip
    tags += [
        (sig, b"XYZ \0\0\0\0" + _s15(adapted[:, i]))
        for i, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))
    ]
    tags += [(sig, trc) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        padded = data + b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 12, 1, 0, 0, 0) + b"acsp" + b"\0" * 24
              + struct.pack(">I", 0) + _s15(_D50) + b"\0" * 4 + b"\0" * 44)  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def system_profile(path: str) -> bytes:
    """An ICC profile from a Debian package (scripts/system-deps.sh test installs them)."""
    file = Path(path)
    if not file.is_file():
        message = f"{path} is missing (apt-get install colord-data libgs-common)"
        if IN_CI:
            pytest.fail(message + " (CI=true)")
        pytest.skip(message)
    return file.read_bytes()


ADOBE_RGB = "/usr/share/color/icc/colord/AdobeRGB1998.icc"
SWOP_CMYK = "/usr/share/color/icc/ghostscript/default_cmyk.icc"


def srgb_of(colour: tuple[int, ...], mode: str, profile: bytes) -> tuple[int, ...]:
    """What LittleCMS makes of `colour` in `profile`, perceptual intent: the expected pixel."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    srgb = ImageCms.createProfile("sRGB")
    pixel = ImageCms.profileToProfile(
        Image.new(mode, (1, 1), colour), source, srgb,
        renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB",
    )  # fmt: skip
    assert pixel is not None
    return tuple(pixel.getpixel((0, 0)))  # type: ignore[arg-type]


# -- formats the service refuses -----------------------------------------------------------


def _tiff_header(tags: list[tuple[int, int, int, bytes]], *, cr2: bool = False) -> bytes:
    """A little-endian TIFF header and IFD0 with these (tag, type, count, value) entries."""
    ifd_at = 16 if cr2 else 8
    head = b"II*\x00" + struct.pack("<I", ifd_at) + (b"CR\x02\x00" + b"\0" * 4 if cr2 else b"")
    data_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, blob = b"", b""
    for tag, kind, count, value in sorted(tags):
        if len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack("<I", data_at + len(blob))
            blob += value + b"\0" * (len(value) % 2)
        entries += struct.pack("<HHI", tag, kind, count) + field
    return head + struct.pack("<H", len(tags)) + entries + b"\0\0\0\0" + blob + b"\0" * 256


def _make(text: str) -> tuple[int, int, int, bytes]:
    raw = text.encode() + b"\0"
    return (0x010F, 2, len(raw), raw)


_SUB_IFDS = (0x014A, 4, 1, struct.pack("<I", 4096))
_PREVIEW = [(0x0100, 3, 1, struct.pack("<H", 160)), (0x0101, 3, 1, struct.pack("<H", 120))]


def raw_headers() -> dict[str, bytes]:
    """The first bytes of each RAW kind, as its camera writes them."""
    return {
        "DNG": _tiff_header([*_PREVIEW, _make("Google"), (0xC612, 1, 4, b"\x01\x04\x00\x00")]),
        "NEF": _tiff_header([*_PREVIEW, _make("NIKON CORPORATION"), _SUB_IFDS]),
        "ARW": _tiff_header([*_PREVIEW, _make("SONY"), _SUB_IFDS]),
        "CR2": _tiff_header([*_PREVIEW, _make("Canon")], cr2=True),
        "CR3": struct.pack(">I", 24) + b"ftypcrx " + b"\0\0\0\x01" + b"crx isom" + b"\0" * 64,
    }


def psd() -> bytes:
    """A minimal Photoshop file: 8BPS header, empty sections, raw RGB image data."""
    w, h = 16, 16
    header = b"8BPS" + struct.pack(">H", 1) + b"\0" * 6 + struct.pack(">HIIHH", 3, h, w, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + b"\x80" * (3 * w * h)


def refused_files() -> dict[str, bytes]:
    """Files a photographer's app might send that must never reach a decoder."""
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "EPS": encode(card(), "EPS"),
        "PDF": encode(card(), "PDF"),
        "PSD": psd(),
        "GIF animation": gif.getvalue(),
        "GIF": encode(card(), "GIF"),
        **{f"RAW {kind}": data for kind, data in raw_headers().items()},
    }


def save_artifact(name: str, img: Image.Image, longest: int = 512) -> Path:
    """A PNG thumbnail of what the model received, for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    thumb = img.copy()
    thumb.thumbnail((longest, longest))
    path = ARTIFACTS / f"{name}.png"
    thumb.save(path)
    return path


def copy_artifact(name: str, source: Path) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, ARTIFACTS / f"{name}.png"))
