"""Stored uploads lose GPS and serial numbers and keep everything the worker reads from them."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from jobs.errors import InvalidImage
from photos.intake import Limits, ModelGeometry, prepare, verify
from photos.privacy import scrub
from tests.photo_files import (
    SERIALS,
    card,
    display_p3_profile,
    encode,
    exif,
    private_leftovers,
)

LIMITS = Limits(max_bytes=25_000_000, max_pixels=64_000_000)
GEOMETRY = ModelGeometry(448 * 448)
FORMATS = ["JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"]
XMP = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:aux="http://ns.adobe.com/exif/1.0/aux/" '
    f'exif:GPSLatitude="48,51.494N" aux:SerialNumber="{SERIALS[0]}" exif:ExposureTime="1/250">'
    f"<exif:GPSLongitude>2,17.668E</exif:GPSLongitude><aux:LensSerialNumber>{SERIALS[1]}"
    "</aux:LensSerialNumber><aux:Lens>RF50mm F1.8 STM</aux:Lens></rdf:Description></rdf:RDF>"
    '</x:xmpmeta><?xpacket end="w"?>'
)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(prepare(data, LIMITS, GEOMETRY).image, dtype=np.int16)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stored_upload_keeps_no_gps_or_serials_and_gives_the_worker_the_same_photo(
    fmt: str, orientation: int
) -> None:
    original = encode(card(), fmt, exif=exif(orientation, gps=True))
    twin = encode(card(), fmt, exif=exif(orientation))
    assert len(private_leftovers(original)) >= 5  # the file does carry them

    checked = verify(original, LIMITS, GEOMETRY)

    assert checked.data != original and len(checked.data) == len(original)
    assert checked.sha256 == hashlib.sha256(checked.data).hexdigest()
    assert checked.ref == f"sha256:{checked.sha256}"
    assert private_leftovers(checked.data) == []
    # What the worker reads from the stored bytes: the facts of the photo sent, and its pixels.
    stored = prepare(checked.data, LIMITS, GEOMETRY)
    assert stored.photo == checked.photo == prepare(twin, LIMITS, GEOMETRY).photo
    assert stored.photo.orientation_applied == orientation
    assert stored.photo.capture.iso == 400 and stored.photo.capture.lens == "Canon RF50mm F1.8 STM"
    assert np.abs(pixels(checked.data) - pixels(original)).max() == 0
    assert np.abs(pixels(checked.data) - pixels(twin)).max() <= 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_upload_without_gps_or_serials_is_stored_byte_for_byte(fmt: str) -> None:
    data = encode(card(), fmt, exif=exif(6))

    checked = verify(data, LIMITS, GEOMETRY)

    assert checked.data == data
    assert checked.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_upload_is_stored_the_same_way_every_time(fmt: str) -> None:
    data = encode(card(), fmt, exif=exif(3, gps=True))

    first, second = verify(data, LIMITS, GEOMETRY), verify(data, LIMITS, GEOMETRY)

    assert first.data == second.data and first.sha256 == second.sha256
    assert scrub(first.data, fmt) is first.data  # nothing left to remove


def test_a_colour_profile_is_converted_once_from_the_original_profile() -> None:
    p3 = display_p3_profile()
    photo = Image.new("RGB", (96, 64), (200, 60, 50))
    data = encode(photo, "JPEG", icc_profile=p3, exif=exif(1, gps=True), quality=100)

    checked = verify(data, LIMITS, GEOMETRY)

    assert private_leftovers(checked.data) == []
    assert checked.photo.color_profile == "Display P3"
    assert prepare(checked.data, LIMITS, GEOMETRY).photo.color_profile == "Display P3"
    assert np.array_equal(pixels(checked.data), pixels(data))


def test_a_path_reference_is_not_rewritten() -> None:
    data = encode(card(), "JPEG", exif=exif(1, gps=True))

    checked = verify(data, LIMITS, GEOMETRY, ref="path:/photos/a.jpg")

    assert checked.data == data and checked.ref == "path:/photos/a.jpg"


def test_the_exif_of_a_gain_map_or_second_image_in_a_jpeg_is_scrubbed_too() -> None:
    gain_map = Image.new("RGB", (32, 32), (30, 30, 200))
    gain_map.encoderinfo = {"exif": exif(1, gps=True)}
    buffer = io.BytesIO()
    card().save(buffer, "MPO", save_all=True, append_images=[gain_map], exif=exif(1, gps=True))
    data = buffer.getvalue()
    assert data.count(SERIALS[0].encode()) == 2  # in both images

    checked = verify(data, LIMITS, GEOMETRY)

    assert private_leftovers(checked.data) == []
    assert np.array_equal(pixels(checked.data), pixels(data))


# A PNG's XMP is dropped with its text chunk (tests/photos/test_png_text_chunks.py).
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_xmp_copies_of_gps_and_serials_are_blanked_and_the_packet_stays_xml(fmt: str) -> None:
    options: dict[str, object] = {"xmp": XMP.encode()}
    data = encode(card(), fmt, exif=exif(1), **options)
    assert b"48,51.494N" in data and SERIALS[1].encode() in data

    checked = verify(data, LIMITS, GEOMETRY)

    assert private_leftovers(checked.data) == []
    start = checked.data.index(b"<x:xmpmeta")
    packet = checked.data[start : checked.data.index(b"</x:xmpmeta>") + len(b"</x:xmpmeta>")]
    description = ET.fromstring(packet)[0][0]
    assert description.get("{http://ns.adobe.com/exif/1.0/}ExposureTime") == "1/250"
    assert description[0].text == "RF50mm F1.8 STM"  # the lens model stays
    assert prepare(checked.data, LIMITS, GEOMETRY).photo == checked.photo


def test_gps_in_a_place_intake_cannot_scrub_refuses_the_upload_instead_of_storing_it() -> None:
    # ImageMagick's hex "Raw profile type exif" text: Pillow reads it as the photo's EXIF, so
    # dropping the chunk would change the capture facts the worker reads.
    raw = b"Exif\x00\x00" + exif(1, gps=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw)}\n{raw.hex()}\n")
    data = encode(card(), "PNG", pnginfo=info)

    with pytest.raises(InvalidImage, match="GPS or serial-number metadata cannot be removed"):
        verify(data, LIMITS, GEOMETRY)
    assert verify(data, LIMITS, GEOMETRY, ref="path:/photos/a.png").data == data
