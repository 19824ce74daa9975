"""Location and serial numbers out of a photo's bytes: EXIF surgery in place, pixels untouched.

Every accepted container keeps its EXIF as one TIFF structure (JPEG APP1, PNG eXIf, WebP
EXIF chunk, the HEIF/AVIF Exif item, a TIFF file's own IFDs). The private entries are
removed from their IFD by moving the later entries up (the freed 12 bytes per entry become
zeros) and their values are zeroed, so the file keeps its length and every offset in it.
XMP copies of the same facts are overwritten with spaces, which XML ignores there. A PNG's
text chunks (tEXt, zTXt, iTXt: XMP compressed or not, comments) are dropped whole.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator

from PIL import Image

from photos.formats import AVIF, HEIF, JPEG, PNG, TIFF, WEBP

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
# Owner, body and lens serials, DNG's camera serial, and maker notes: Canon, Nikon, Sony,
# Fujifilm and Olympus write the body serial there, in layouts no one can vouch for.
PRIVATE_TAGS = frozenset({0xA430, 0xA431, 0xA435, 0xC62F, 0x927C})
_REMOVED = PRIVATE_TAGS | {GPS_IFD}

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip
_MAX_ENTRIES = 1024
_MAX_CHAIN = 8  # IFD0, a thumbnail's IFD1 and a few more; a loop stops here too
_EXIF_HEADER = b"Exif\x00\x00"
# The same facts in XMP, under the prefixes Adobe and exiftool write.
_XMP_NAME = (
    rb"(?:exif:GPS\w+|(?:aux|exifEX):(?:SerialNumber|LensSerialNumber|BodySerialNumber"
    rb"|CameraOwnerName|OwnerName))"
)
_XMP_ATTRIBUTE = re.compile(rb"(?<=\s)" + _XMP_NAME + rb"\s*=\s*(?:\"[^\"]*\"|'[^']*')")
_XMP_ELEMENT = re.compile(
    rb"<(?P<name>" + _XMP_NAME + rb")(?:\s[^>]*?)?(?:/>|>.*?</(?P=name)\s*>)", re.DOTALL
)
_XMP_START, _XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"


def is_private(exif: Image.Exif) -> bool:
    """Whether Pillow's reading of this EXIF finds a GPS IFD or a private tag."""
    if any(tag in exif for tag in _REMOVED):
        return True
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        return False  # unreadable to Pillow: the intake reads nothing from it either
    return any(tag in sub for tag in _REMOVED)


def scrub(data: bytes, fmt: str) -> bytes:
    """`data` without GPS, serials, owner name and maker notes; `data` itself if it had none."""
    buf = bytearray(data)
    changed = False
    blocks = [(_scrub_tiff, *block) for block in _exif_blocks(buf, fmt)]
    blocks += [(_blank_xmp, *block) for block in _xmp_blocks(buf, fmt)]
    for clean, start, end, crc_from in blocks:
        if clean(buf, start, end):
            changed = True
            if crc_from is not None:
                buf[end : end + 4] = struct.pack(">I", zlib.crc32(buf[crc_from:end]))
    if fmt == PNG:
        # Text chunks are free-form (XMP, ImageMagick's hex EXIF, a "Location" comment),
        # compressed or not: none is scrubbed in place, every one is dropped.
        stripped = _without_png_text(buf)
        if stripped is not None:
            buf, changed = stripped, True
    return bytes(buf) if changed else data


PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})


def _without_png_text(buf: bytearray) -> bytearray | None:
    """The PNG without its text chunks (it has no offsets to keep), or None if it had none."""
    kept, dropped, pos = bytearray(buf[:8]), False, 8
    while pos + 12 <= len(buf):
        length, kind = struct.unpack_from(">I4s", buf, pos)
        end = pos + 12 + length
        if end > len(buf):
            break
        if kind in PNG_TEXT_CHUNKS:
            dropped = True
        else:
            kept += buf[pos:end]
        pos = end
    kept += buf[pos:]  # anything after the last whole chunk, as it was
    return kept if dropped else None


# -- where each container keeps its EXIF and XMP ---------------------------------------------

_Block = tuple[int, int, int | None]  # start, end, where a PNG chunk's CRC starts counting


def _exif_blocks(buf: bytearray, fmt: str) -> list[_Block]:
    finders = {JPEG: _jpeg, PNG: _png, WEBP: _webp, HEIF: _iso_bmff, AVIF: _iso_bmff}
    if fmt == TIFF:
        return [(0, len(buf), None)]
    return list(finders[fmt](buf)) if fmt in finders else []


def _xmp_blocks(buf: bytearray, fmt: str) -> list[_Block]:
    """XMP packets: PNG's in uncompressed iTXt chunks (CRC kept), elsewhere wherever they are."""
    if fmt == PNG:
        return [block for block in _png(buf, b"iTXt") if _XMP_START in buf[block[0] : block[1]]]
    blocks: list[_Block] = []
    at = buf.find(_XMP_START)
    while at != -1:
        end = buf.find(_XMP_END, at)
        if end == -1:
            break
        blocks.append((at, end, None))
        at = buf.find(_XMP_START, end)
    return blocks


def _jpeg(buf: bytearray) -> Iterator[_Block]:
    # Every APP1 Exif segment, the primary's and those of MPF's appended images: 0xFF in
    # entropy-coded data is always followed by 0x00 or a restart marker, never by 0xE1.
    at = buf.find(b"\xff\xe1")
    while at != -1:
        if buf[at + 4 : at + 10] == _EXIF_HEADER:
            (length,) = struct.unpack_from(">H", buf, at + 2)
            yield at + 10, min(len(buf), at + 2 + length), None
        at = buf.find(b"\xff\xe1", at + 2)


def _png(buf: bytearray, wanted: bytes = b"eXIf") -> Iterator[_Block]:
    pos = 8
    while pos + 12 <= len(buf):
        length, kind = struct.unpack_from(">I4s", buf, pos)
        end = pos + 8 + length
        if end + 4 > len(buf):
            return
        if kind == wanted:
            yield pos + 8, end, pos + 4
        pos = end + 4


def _webp(buf: bytearray) -> Iterator[_Block]:
    pos = 12
    while pos + 8 <= len(buf):
        kind, length = struct.unpack_from("<4sI", buf, pos)
        if kind == b"EXIF":
            yield pos + 8, min(len(buf), pos + 8 + length), None
        pos += 8 + length + (length & 1)


def _boxes(buf: bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO-BMFF boxes between start and end."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        head = 8
        if size == 1 and pos + 16 <= end:
            (size,) = struct.unpack_from(">Q", buf, pos + 8)
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield bytes(kind), pos + head, pos + size
        pos += size


def _iso_bmff(buf: bytearray) -> Iterator[_Block]:
    """The Exif items of a HEIF/AVIF file: item types from `iinf`, places from `iloc`."""
    for kind, start, end in _boxes(buf, 0, len(buf)):
        if kind != b"meta":
            continue
        children = {k: (s, e) for k, s, e in _boxes(buf, start + 4, end)}
        if b"iinf" not in children or b"iloc" not in children:
            return
        exif_items = set(_items_of_type(buf, *children[b"iinf"], b"Exif"))
        idat = children.get(b"idat", (0, 0))[0]
        for item, extents in _locations(buf, *children[b"iloc"], idat):
            if item in exif_items and len(extents) == 1:
                offset, length = extents[0]
                if offset + 4 <= min(len(buf), offset + length):
                    (skip,) = struct.unpack_from(">I", buf, offset)
                    yield offset + 4 + skip, min(len(buf), offset + length), None
        return


def _items_of_type(buf: bytearray, start: int, end: int, wanted: bytes) -> Iterator[int]:
    version = buf[start]
    pos = start + 4 + (2 if version == 0 else 4)
    for kind, payload, _end in _boxes(buf, pos, end):
        if kind != b"infe" or buf[payload] < 2:
            continue
        v3 = buf[payload] >= 3
        item = struct.unpack_from(">I" if v3 else ">H", buf, payload + 4)[0]
        type_at = payload + 4 + (4 if v3 else 2) + 2
        if bytes(buf[type_at : type_at + 4]) == wanted:
            yield item


def _locations(
    buf: bytearray, start: int, end: int, idat: int
) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(item id, [(file offset, length)]) per item of an `iloc` box, file or idat based."""
    version = buf[start]
    sizes = buf[start + 4], buf[start + 5]
    offset_size, length_size = sizes[0] >> 4, sizes[0] & 15
    base_size, index_size = sizes[1] >> 4, (sizes[1] & 15) if version in (1, 2) else 0
    pos = start + 6

    def read(size: int) -> int:
        nonlocal pos
        value = int.from_bytes(buf[pos : pos + size], "big") if size else 0
        pos += size
        return value

    count = read(2 if version < 2 else 4)
    for _ in range(count):
        if pos >= end:
            return
        item = read(2 if version < 2 else 4)
        method = read(2) & 15 if version in (1, 2) else 0
        read(2)  # data_reference_index
        base = read(base_size)
        extents = []
        for _ in range(read(2)):
            read(index_size)
            offset, length = read(offset_size), read(length_size)
            extents.append((base + offset + (idat if method == 1 else 0), length))
        if method in (0, 1):
            yield item, extents


def _blank_xmp(buf: bytearray, start: int, end: int) -> bool:
    spans = [
        match.span()
        for pattern in (_XMP_ATTRIBUTE, _XMP_ELEMENT)
        for match in pattern.finditer(buf, start, end)
    ]
    for first, last in spans:
        buf[first:last] = b" " * (last - first)
    return bool(spans)


# -- the TIFF structure ----------------------------------------------------------------------


class _Tiff:
    """A TIFF structure inside `buf` at [start, end); offsets are relative to its header."""

    def __init__(self, buf: bytearray, start: int, end: int) -> None:
        self.buf, self.start, self.end = buf, start, end
        self.order = "<" if buf[start : start + 2] == b"II" else ">"

    def fits(self, offset: int, size: int) -> bool:
        return offset >= 0 and self.start + offset + size <= self.end

    def read(self, fmt: str, offset: int) -> int:
        return int(struct.unpack_from(self.order + fmt, self.buf, self.start + offset)[0])

    def zero(self, offset: int, size: int) -> None:
        if size > 0 and self.fits(offset, size):
            at = self.start + offset
            self.buf[at : at + size] = bytes(size)

    def entries(self, ifd: int) -> list[tuple[int, int, int, int]] | None:
        """(tag, type, count, value field offset) of each entry, or None for no valid IFD."""
        if not self.fits(ifd, 2):
            return None
        count = self.read("H", ifd)
        if count > _MAX_ENTRIES or not self.fits(ifd, 2 + 12 * count + 4):
            return None
        return [
            (self.read("H", at), self.read("H", at + 2), self.read("I", at + 4), at + 8)
            for at in range(ifd + 2, ifd + 2 + 12 * count, 12)
        ]

    def zero_value(self, kind: int, count: int, field: int) -> None:
        size = _TYPE_SIZES.get(kind, 1) * count
        if size > 4:
            self.zero(self.read("I", field), size)

    def zero_ifd(self, ifd: int) -> None:
        entries = self.entries(ifd)
        if entries is None:
            return
        for _tag, kind, count, field in entries:
            self.zero_value(kind, count, field)
        self.zero(ifd, 2 + 12 * len(entries) + 4)

    def remove(self, ifd: int, entries: list[tuple[int, int, int, int]]) -> bool:
        """Drop the private entries of `ifd` in place; the IFD's next pointer moves up."""
        gone = [e for e in entries if e[0] in _REMOVED]
        if not gone:
            return False
        at = self.start + ifd
        size = 2 + 12 * len(entries) + 4
        old = bytes(self.buf[at : at + size])
        kept = b"".join(
            old[2 + 12 * i : 14 + 12 * i] for i, e in enumerate(entries) if e[0] not in _REMOVED
        )
        for tag, kind, count, field in gone:
            if tag == GPS_IFD:
                self.zero_ifd(self.read("I", field))
            else:
                self.zero_value(kind, count, field)
        left = struct.pack(self.order + "H", len(entries) - len(gone))
        self.buf[at : at + size] = (left + kept + old[-4:]).ljust(size, b"\x00")
        return True


def _scrub_tiff(buf: bytearray, start: int, end: int) -> bool:
    """Remove GPS and private tags from IFD0, the IFDs after it and their Exif IFDs."""
    if buf[start : start + 6] == _EXIF_HEADER:
        start += 6
    if buf[start : start + 4] not in (b"II*\x00", b"MM\x00*"):
        return False
    tiff = _Tiff(buf, start, end)
    changed, seen = False, set[int]()
    ifd = tiff.read("I", 4)
    while ifd and ifd not in seen and len(seen) < _MAX_CHAIN:
        seen.add(ifd)
        entries = tiff.entries(ifd)
        if entries is None:
            break
        following = tiff.read("I", ifd + 2 + 12 * len(entries))
        for tag, _kind, _count, field in entries:
            sub = tiff.read("I", field) if tag == EXIF_IFD else 0
            if sub and sub not in seen and (sub_entries := tiff.entries(sub)) is not None:
                seen.add(sub)
                changed = tiff.remove(sub, sub_entries) or changed
        changed = tiff.remove(ifd, entries) or changed
        ifd = following
    return changed
