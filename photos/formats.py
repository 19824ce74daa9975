"""Which file formats reach a decoder: an allowlist decided from the file's first bytes."""

from __future__ import annotations

import struct

from jobs.errors import UnsupportedFormat

# Pillow plugin ids of the accepted formats, and how people call them.
JPEG, PNG, WEBP, HEIF, AVIF, TIFF = "JPEG", "PNG", "WEBP", "HEIF", "AVIF", "TIFF"
ACCEPTED: tuple[str, ...] = ("JPEG", "PNG", "WebP", "HEIC/HEIF", "AVIF", "TIFF (single page)")

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2", b"heif"}
_AVIF_BRANDS = {b"avif", b"avis"}

# Refused by name: the sender learns what they sent, not only that it was wrong.
_NAMED: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%!", "PostScript"),
    (b"8BPS", "PSD (Photoshop)"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"qoif", "QOI"),
    (b"gimp xcf", "XCF (GIMP)"),
    (b"SIMPLE  =", "FITS"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"v/1\x01", "OpenEXR"),
    (b"\x01\xda", "SGI"),
    (b"PK\x03\x04", "ZIP"),
    (b"<?xml", "XML/SVG"),
    (b"<svg", "SVG"),
)
_RAW_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"FUJIFILMCCD-RAW", "RAF (Fujifilm)"),
    (b"IIRO", "ORF (Olympus)"),
    (b"IIRS", "ORF (Olympus)"),
    (b"MMOR", "ORF (Olympus)"),
    (b"IIU\x00", "RW2 (Panasonic)"),
)
# TIFF-based RAW files by extension, for files whose tags alone do not tell.
RAW_EXTENSIONS = {
    ".dng": "DNG", ".nef": "NEF (Nikon)", ".nrw": "NRW (Nikon)",
    ".arw": "ARW (Sony)", ".srf": "SRF (Sony)", ".sr2": "SR2 (Sony)",
    ".cr2": "CR2 (Canon)", ".pef": "PEF (Pentax)", ".srw": "SRW (Samsung)",
    ".3fr": "3FR (Hasselblad)", ".iiq": "IIQ (Phase One)", ".erf": "ERF (Epson)",
    ".kdc": "KDC (Kodak)", ".mef": "MEF (Mamiya)", ".mos": "MOS (Leaf)",
    ".rwl": "RWL (Leica)",
}  # fmt: skip
_RAW_BY_MAKE = {
    "NIKON": "NEF (Nikon)", "SONY": "ARW (Sony)", "PENTAX": "PEF (Pentax)",
    "RICOH": "PEF (Pentax)", "SAMSUNG": "SRW (Samsung)", "CANON": "CR2 (Canon)",
}  # fmt: skip

_TAG_MAKE, _TAG_PHOTOMETRIC, _TAG_SUB_IFDS, _TAG_DNG_VERSION = 0x010F, 0x0106, 0x014A, 0xC612
_PHOTOMETRIC_RAW = {32803, 34892}  # colour filter array, linear raw
_MAX_IFD_ENTRIES = 1024


def accepted_list() -> str:
    return ", ".join(ACCEPTED)


def refuse(detected: str, why: str = "") -> UnsupportedFormat:
    """The error for a refused format, naming it and listing those accepted."""
    return UnsupportedFormat(
        f"{detected} is not accepted{why}; send one of: {accepted_list()}",
        detected=detected,
        accepted=ACCEPTED,
    )


def refuse_raw(detected: str) -> UnsupportedFormat:
    return refuse(
        f"Camera RAW ({detected})",
        ": the critique judges a rendered photo, so send the camera's JPEG or HEIC "
        "(or an export from your RAW developer)",
    )


def sniff(data: bytes, name: str | None = None) -> str:
    """The Pillow plugin id for `data`, decided from its signature; refuses everything else.

    `name` (a file name, if known) only helps tell TIFF-based RAW files from TIFFs.
    """
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[4:8] == b"ftyp":
        return _iso_bmff(data)
    for signature, raw in _RAW_SIGNATURES:
        if head.startswith(signature):
            raise refuse_raw(raw)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data, name)
    if head.startswith(b"%!PS-Adobe") and b"EPSF" in head.split(b"\n", 1)[0]:
        raise refuse("EPS")
    for signature, named in _NAMED:
        if head.startswith(signature):
            raise refuse(named)
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        raise refuse("PNM (PBM/PGM/PPM)")
    raise UnsupportedFormat(
        f"Image format not recognised ({len(data)} bytes); send one of: {accepted_list()}",
        detected="unrecognised",
        accepted=ACCEPTED,
    )


def _iso_bmff(data: bytes) -> str:
    """HEIF or AVIF by the `ftyp` box's brands; Canon CR3 and videos are refused."""
    size = int.from_bytes(data[:4], "big")
    end = min(len(data), size if 16 <= size <= 4096 else 64)
    major = data[8:12]
    brands = {major} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if b"crx " in brands:
        raise refuse_raw("CR3 (Canon)")
    if major in _AVIF_BRANDS or (major in _GENERIC_BRANDS and brands & _AVIF_BRANDS):
        return AVIF
    if major in _HEIF_BRANDS or major in _GENERIC_BRANDS:
        return HEIF
    shown = major.decode("latin-1").strip() or "?"
    raise refuse(f"ISO-BMFF '{shown}' (a video or other media, not a still photo)")


def _tiff(data: bytes, name: str | None) -> str:
    """A TIFF, unless its tags (or its name) say it is a camera's RAW file."""
    if data[8:10] == b"CR":
        raise refuse_raw("CR2 (Canon)")
    tags = _ifd0(data)
    if _TAG_DNG_VERSION in tags:
        raise refuse_raw("DNG")
    photometric = _short(tags.get(_TAG_PHOTOMETRIC), data)
    make = _ascii(tags.get(_TAG_MAKE), data)
    if photometric in _PHOTOMETRIC_RAW or (make and _TAG_SUB_IFDS in tags):
        upper = make.upper()
        known = next((raw for key, raw in _RAW_BY_MAKE.items() if upper.startswith(key)), None)
        raise refuse_raw(known or f"TIFF-based, from {make or 'an unknown camera'}")
    if name is not None:
        suffix = name[name.rfind(".") :].lower() if "." in name else ""
        if suffix in RAW_EXTENSIONS:
            raise refuse_raw(RAW_EXTENSIONS[suffix])
    return TIFF


_Entry = tuple[int, int, bytes, str]  # type, count, 4-byte value field, byte order


def _ifd0(data: bytes) -> dict[int, _Entry]:
    """The first IFD's entries, read with struct: no decoder, no tag values logged."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
    except struct.error:
        return {}
    tags: dict[int, _Entry] = {}
    for index in range(min(count, _MAX_IFD_ENTRIES)):
        pos = offset + 2 + 12 * index
        if pos + 12 > len(data):
            break
        tag, kind, n = struct.unpack_from(order + "HHI", data, pos)
        tags[tag] = (kind, n, data[pos + 8 : pos + 12], order)
    return tags


def _short(entry: _Entry | None, data: bytes) -> int | None:
    if entry is None or entry[0] != 3:
        return None
    return int(struct.unpack_from(entry[3] + "H", entry[2])[0])


def _ascii(entry: _Entry | None, data: bytes) -> str:
    if entry is None or entry[0] != 2:
        return ""
    kind, count, value, order = entry
    if count <= 4:
        raw = value[:count]
    else:
        (offset,) = struct.unpack(order + "I", value)
        raw = data[offset : offset + min(count, 64)]
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()
