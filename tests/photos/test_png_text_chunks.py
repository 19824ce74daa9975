"""A stored PNG keeps no location or serial in any chunk Pillow or exiftool can read."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from jobs.errors import InvalidImage
from photos.intake import Limits, ModelGeometry, verify
from tests.photo_files import SERIALS, card, encode, exif, private_leftovers
from tests.photos.test_photo_privacy import XMP

LIMITS = Limits(max_bytes=25_000_000, max_pixels=64_000_000)
GEOMETRY = ModelGeometry(448 * 448)
LATITUDE = "48,51.494N"
RAW_EXIF = b"Exif\x00\x00" + exif(1, gps=True)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def with_chunks(data: bytes, *chunks: bytes) -> bytes:
    """`data` (a PNG) with `chunks` right before its first IDAT (and one after, at the end)."""
    at = data.index(b"IDAT") - 4
    end = data.rindex(b"IEND") - 4
    return data[:at] + b"".join(chunks) + data[at:end] + b"".join(chunks[:1]) + data[end:]


def itxt(key: str, text: str, *, compressed: bool) -> bytes:
    body = text.encode()
    body = zlib.compress(body) if compressed else body
    return chunk(b"iTXt", key.encode() + b"\x00" + bytes([int(compressed), 0]) + b"\x00\x00" + body)


def ztxt(key: str, text: str) -> bytes:
    return chunk(b"zTXt", key.encode() + b"\x00\x00" + zlib.compress(text.encode("latin-1")))


def text(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode() + b"\x00" + value.encode("latin-1"))


RAW_PROFILE = f"\nexif\n{len(RAW_EXIF)}\n{RAW_EXIF.hex()}\n"
CASES = {
    "XMP in tEXt": [text("XML:com.adobe.xmp", XMP)],
    "XMP in zTXt": [ztxt("XML:com.adobe.xmp", XMP)],
    "XMP in compressed iTXt": [itxt("XML:com.adobe.xmp", XMP, compressed=True)],
    "XMP in plain iTXt": [itxt("XML:com.adobe.xmp", XMP, compressed=False)],
    "hex EXIF in tEXt": [text("Raw profile type exif", RAW_PROFILE)],
    "hex EXIF in zTXt": [ztxt("Raw profile type exif", RAW_PROFILE)],
    "hex EXIF in compressed iTXt": [itxt("Raw profile type exif", RAW_PROFILE, compressed=True)],
    "a GPS comment in tEXt": [text("Comment", f"GPSLatitude {LATITUDE} {SERIALS[0]}")],
    "a location in compressed iTXt": [itxt("Location", LATITUDE, compressed=True)],
    "every kind at once": [text("XML:com.adobe.xmp", XMP), ztxt("Comment", LATITUDE),
                           itxt("Raw profile type exif", RAW_PROFILE, compressed=True)],
}  # fmt: skip


def png_with(chunks: list[bytes], *, gps_exif: bool) -> bytes:
    options: dict[str, object] = {"exif": exif(1, gps=True)} if gps_exif else {}
    return with_chunks(encode(card(), "PNG", **options), *chunks)


def chunk_kinds(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        kinds.append(kind)
        pos += 12 + length
    return kinds


def exiftool_tags(data: bytes, tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "stored.png"
    path.write_bytes(data)
    out = subprocess.run(["exiftool", "-j", "-a", "-G1", "-ee", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    tags: dict[str, object] = json.loads(out)[0]
    return tags


@pytest.mark.parametrize("gps_exif", [False, True], ids=["no eXIf", "GPS eXIf too"])
@pytest.mark.parametrize("name", list(CASES))
def test_a_stored_png_keeps_no_location_or_serial_in_any_chunk(
    name: str, gps_exif: bool, tmp_path: Path
) -> None:
    data = png_with(CASES[name], gps_exif=gps_exif)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.text  # Pillow reads the planted text
    if any(b"Raw profile type exif" in c for c in CASES[name]) and not gps_exif:
        # Pillow takes this text as the photo's EXIF: without it the capture facts would
        # change, so the upload is refused whole and nothing is stored.
        with pytest.raises(InvalidImage, match="cannot be removed"):
            verify(data, LIMITS, GEOMETRY)
        return
    stored = verify(data, LIMITS, GEOMETRY).data

    assert not {b"tEXt", b"zTXt", b"iTXt"} & set(chunk_kinds(stored))
    assert private_leftovers(stored) == []
    with Image.open(io.BytesIO(stored)) as img:
        img.load()
        assert img.text == {} and not any("xmp" in str(k).lower() for k in img.info)
    for needle in (LATITUDE.encode(), SERIALS[0].encode(), SERIALS[1].encode()):
        assert needle not in stored
    if shutil.which("exiftool"):
        tags = exiftool_tags(stored, tmp_path)
        leaks = [k for k, v in tags.items()
                 if "GPS" in k or "Serial" in k or LATITUDE in str(v)
                 or any(s in str(v) for s in SERIALS)]  # fmt: skip
        assert leaks == []


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool: scripts/system-deps.sh")
def test_exiftool_reads_the_planted_location_before_intake(tmp_path: Path) -> None:
    # The check above is able to fail: exiftool finds each planted kind in the upload.
    data = png_with(CASES["every kind at once"], gps_exif=True)
    tags = exiftool_tags(data, tmp_path)
    assert any("GPS" in k for k in tags) and any(LATITUDE in str(v) for v in tags.values())
