"""The intake pipeline on real files: formats, orientation, colour, alpha, metadata, refusals."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageFile

from jobs.errors import InvalidImage, UnsupportedFormat
from photos import intake
from photos.formats import ACCEPTED
from photos.intake import Limits, ModelGeometry, image_tokens, model_size, prepare, verify
from tests.photo_files import (
    ADOBE_RGB,
    BOTTOM_LEFT,
    BOTTOM_RIGHT,
    CARD_SIZE,
    GPS_LATITUDE,
    SERIALS,
    SWOP_CMYK,
    TOP_LEFT,
    TOP_RIGHT,
    card,
    display_p3_profile,
    encode,
    exif,
    gray16,
    is_close,
    oriented,
    png16,
    quadrants,
    refused_files,
    save_artifact,
    srgb_of,
    system_profile,
    tiff16,
)

LIMITS = Limits(max_bytes=25_000_000, max_pixels=64_000_000)
GEOMETRY = ModelGeometry(448 * 448)
UPRIGHT = (TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT)
FORMATS = ["JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"]
Decodes = list[tuple[str, tuple[int, int]]]


def flat(
    colour: tuple[int, ...], mode: str = "RGB", size: tuple[int, int] = (64, 64)
) -> Image.Image:
    return Image.new(mode, size, colour)


def centre(img: Image.Image) -> tuple[int, ...]:
    return tuple(img.getpixel((img.width // 2, img.height // 2)))  # type: ignore[arg-type]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Decodes]:
    """(format, size decoded at) of each image decoded while the test runs."""
    seen: Decodes = []
    original = ImageFile.ImageFile.load

    def counting(self: ImageFile.ImageFile) -> object:
        if self.tile:  # a load that still has pixels to decode
            seen.append((str(self.format), self.size))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    yield seen


# -- orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_exif_orientation_reaches_the_model_upright(fmt: str, orientation: int) -> None:
    prepared = prepare(oriented(fmt, orientation), LIMITS, GEOMETRY)

    assert prepared.image.size == CARD_SIZE
    seen = quadrants(prepared.image)
    assert all(is_close(s, e, 40) for s, e in zip(seen, UPRIGHT, strict=True)), seen
    photo = prepared.photo
    assert (photo.width, photo.height) == CARD_SIZE
    assert photo.orientation_applied == orientation
    if fmt == "JPEG" and orientation in (6, 8):
        save_artifact(f"orientation-{orientation}-jpeg", prepared.image)


def test_a_phone_portrait_is_upright_and_keeps_its_full_size() -> None:
    portrait = card().resize((4032, 2400)).transpose(Image.Transpose.ROTATE_90)
    photo = prepare(encode(portrait, "JPEG", exif=exif(6)), LIMITS, GEOMETRY)

    assert (photo.photo.width, photo.photo.height) == (4032, 2400)
    assert photo.image.width > photo.image.height
    assert is_close(quadrants(photo.image)[0], TOP_LEFT, 40)


# -- formats and bit depths ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("HEIC", encode(flat((200, 120, 40)), "HEIF"), (200, 120, 40)),
        ("AVIF", encode(flat((200, 120, 40)), "AVIF"), (200, 120, 40)),
        ("16-bit RGB PNG", png16((0x8080, 0xFFFF, 0x1234)), (128, 255, 18)),
        ("16-bit RGB TIFF", tiff16((0x8080, 0xFFFF, 0x1234)), (128, 255, 18)),
        ("16-bit grey PNG", gray16(40_000, "PNG"), (156, 156, 156)),
        ("16-bit grey TIFF", gray16(40_000, "TIFF"), (156, 156, 156)),
        ("WebP", encode(flat((200, 120, 40)), "WEBP", lossless=True), (200, 120, 40)),
        ("1-bit TIFF", encode(flat(1, "1"), "TIFF"), (255, 255, 255)),
    ],
)
def test_each_accepted_format_and_depth_reaches_the_model_as_8_bit_srgb(
    name: str, data: bytes, expected: tuple[int, int, int]
) -> None:
    prepared = prepare(data, LIMITS, GEOMETRY)

    assert prepared.image.mode == "RGB"
    assert is_close(centre(prepared.image), expected, 4), (name, centre(prepared.image))


def test_a_jpeg_with_a_gain_map_uses_its_primary_image() -> None:
    primary, gain_map = flat((200, 30, 30)), flat((30, 30, 200), size=(32, 32))
    buffer = io.BytesIO()
    primary.save(buffer, "MPO", save_all=True, append_images=[gain_map])

    prepared = prepare(buffer.getvalue(), LIMITS, GEOMETRY)

    assert prepared.photo.format == "JPEG"
    assert is_close(centre(prepared.image), (200, 30, 30), 6)


def test_the_photo_is_decoded_once(decodes: Decodes) -> None:
    prepare(encode(card(), "JPEG", exif=exif(6)), LIMITS, GEOMETRY)
    prepare(png16((1, 2, 3)), LIMITS, GEOMETRY)

    assert [fmt for fmt, _size in decodes] == ["JPEG", "PNG"]


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_no_smaller_than_the_model_input(
    decodes: Decodes,
) -> None:
    prepared = prepare(encode(card().resize((4000, 2400)), "JPEG"), LIMITS, GEOMETRY)

    assert decodes == [("JPEG", (1000, 600))]  # libjpeg's 1/4 scale, not 4000x2400
    assert prepared.image.size == model_size(4000, 2400, GEOMETRY) == (576, 320)
    assert (prepared.photo.width, prepared.photo.height) == (4000, 2400)


# -- colour ----------------------------------------------------------------------------------


def test_display_p3_reaches_the_model_as_littlecms_converts_it_to_srgb() -> None:
    p3 = display_p3_profile()
    colour = (200, 60, 50)
    expected = srgb_of(colour, "RGB", p3)
    assert not is_close(expected, colour, 10)  # P3 and sRGB differ here
    assert is_close(srgb_of((234, 51, 35), "RGB", p3), (255, 0, 0), 2)  # sRGB red, known in P3
    data = encode(flat(colour), "JPEG", icc_profile=p3, quality=100, subsampling=0)

    prepared = prepare(data, LIMITS, GEOMETRY)

    assert is_close(centre(prepared.image), expected, 2), (centre(prepared.image), expected)
    assert prepared.photo.color_profile == "Display P3"
    save_artifact("display-p3", _swatch(colour, prepared.image))


def test_adobe_rgb_reaches_the_model_as_littlecms_converts_it_to_srgb() -> None:
    adobe = system_profile(ADOBE_RGB)
    colour = (60, 170, 90)
    expected = srgb_of(colour, "RGB", adobe)
    assert not is_close(expected, colour, 10)

    prepared = prepare(encode(flat(colour), "PNG", icc_profile=adobe), LIMITS, GEOMETRY)

    assert is_close(centre(prepared.image), expected, 2), (centre(prepared.image), expected)
    assert prepared.photo.color_profile == "Compatible with Adobe RGB (1998)"
    save_artifact("adobe-rgb", _swatch(colour, prepared.image))


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_reaches_the_model_through_its_embedded_profile(fmt: str) -> None:
    swop = system_profile(SWOP_CMYK)
    ink = (10, 170, 200, 30)
    expected = srgb_of(ink, "CMYK", swop)
    naive = flat(ink, "CMYK").convert("RGB").getpixel((0, 0))
    assert not is_close(expected, naive, 10)  # the profile matters

    data = encode(flat(ink, "CMYK"), fmt, icc_profile=swop, quality=100)
    prepared = prepare(data, LIMITS, GEOMETRY)

    assert is_close(centre(prepared.image), expected, 2), (centre(prepared.image), expected)
    assert prepared.photo.color_profile == "Artifex CMYK SWOP Profile"


def test_an_image_without_a_profile_is_taken_as_srgb_unchanged() -> None:
    prepared = prepare(encode(flat((17, 99, 201)), "PNG"), LIMITS, GEOMETRY)

    assert centre(prepared.image) == (17, 99, 201)
    assert prepared.photo.color_profile == "none (taken as sRGB)"


def test_cmyk_without_a_profile_is_converted_and_says_so() -> None:
    prepared = prepare(encode(flat((0, 0, 0, 0), "CMYK"), "TIFF"), LIMITS, GEOMETRY)

    assert centre(prepared.image) == (255, 255, 255)
    assert prepared.photo.color_profile == "none (CMYK converted without a profile)"


def test_an_unusable_profile_is_ignored_and_recorded() -> None:
    data = encode(flat((17, 99, 201)), "PNG", icc_profile=b"not an icc profile" * 8)

    prepared = prepare(data, LIMITS, GEOMETRY)

    assert centre(prepared.image) == (17, 99, 201)
    assert prepared.photo.color_profile == "unusable embedded profile ignored; taken as sRGB"


def _swatch(colour: tuple[int, int, int], received: Image.Image) -> Image.Image:
    """Left: the file's numbers shown as if sRGB (what the model got before); right: now."""
    side = Image.new("RGB", (256, 128))
    side.paste(flat(colour, size=(128, 128)), (0, 0))
    side.paste(received.resize((128, 128)), (128, 0))
    return side


# -- palette and alpha ---------------------------------------------------------------------


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = flat((255, 0, 0, 128), "RGBA")
    la = flat((0, 0), "LA")
    palette = flat(0, "P")
    palette.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    palette.info["transparency"] = 0

    for data, expected in (
        (encode(rgba, "PNG"), (255, 127, 127)),
        (encode(rgba, "WEBP", lossless=True), (255, 127, 127)),
        (encode(la, "PNG"), (255, 255, 255)),
        (encode(palette, "PNG", transparency=0), (255, 255, 255)),
    ):
        assert is_close(centre(prepare(data, LIMITS, GEOMETRY).image), expected, 1)


def test_an_opaque_palette_image_keeps_its_colours() -> None:
    palette = card().quantize(8)

    prepared = prepare(encode(palette, "PNG"), LIMITS, GEOMETRY)

    assert all(is_close(s, e, 12) for s, e in zip(quadrants(prepared.image), UPRIGHT, strict=True))


# -- refusals --------------------------------------------------------------------------------


@pytest.fixture
def no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open the bytes with Pillow fails the test."""

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a decoder opened a refused file")

    monkeypatch.setattr(intake.Image, "open", forbidden)


@pytest.mark.parametrize(("kind", "data"), list(refused_files().items()))
def test_refused_formats_are_named_with_the_accepted_list_before_any_decoder(
    kind: str, data: bytes, no_decoder: None
) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        verify(data, LIMITS, GEOMETRY)

    message = str(info.value)
    assert info.value.accepted == ACCEPTED
    assert "JPEG, PNG, WebP, HEIC/HEIF, AVIF, TIFF (single page)" in message
    name = kind.removeprefix("RAW ").split()[0]
    assert name in message and name in info.value.detected
    if kind.startswith("RAW"):
        assert "Camera RAW" in message and "JPEG or HEIC" in message


def test_a_tiff_named_like_a_raw_file_is_refused_as_raw(no_decoder: None) -> None:
    with pytest.raises(UnsupportedFormat, match=r"Camera RAW \(NEF \(Nikon\)\)"):
        verify(encode(card(), "TIFF"), LIMITS, GEOMETRY, name="DSC_0042.NEF")


def test_a_video_container_is_refused_by_its_brand(no_decoder: None) -> None:
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
    with pytest.raises(UnsupportedFormat, match="'mp42' \\(a video"):
        verify(mp4, LIMITS, GEOMETRY)


@pytest.mark.parametrize(("fmt", "named"), [("PNG", "animated PNG"), ("WEBP", "animated WebP"),
                                            ("TIFF", "multi-page TIFF")])  # fmt: skip
def test_animations_and_multi_page_files_are_refused(
    fmt: str, named: str, decodes: Decodes
) -> None:
    frames = [flat((255, 0, 0)), flat((0, 255, 0))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])

    with pytest.raises(UnsupportedFormat, match=f"{named} \\(2 frames\\)"):
        verify(data, LIMITS, GEOMETRY)
    assert decodes == []


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(decodes: Decodes) -> None:
    with pytest.raises(InvalidImage, match=r"320x192 = 61440 pixels; the limit is 60000"):
        prepare(encode(card(), "HEIF"), Limits(25_000_000, 60_000), GEOMETRY)
    assert decodes == []


def test_a_panorama_longer_than_the_model_takes_is_refused() -> None:
    with pytest.raises(InvalidImage, match="more than 200:1"):
        prepare(encode(flat((1, 2, 3), size=(4020, 20)), "PNG"), LIMITS, GEOMETRY)


# -- capture facts ---------------------------------------------------------------------------


def test_capture_facts_are_read_from_a_whitelist() -> None:
    photo = prepare(encode(card(), "JPEG", exif=exif(1, gps=True)), LIMITS, GEOMETRY).photo

    assert photo.capture.to_dict() == {
        "make": "Canon", "model": "Canon EOS R5", "lens": "Canon RF50mm F1.8 STM",
        "focal_length_mm": 50.0, "focal_length_35mm": 50, "aperture": 2.8,
        "exposure_time_s": 0.004, "iso": 400, "captured_at": "2026-05-01T18:03:22+02:00",
    }  # fmt: skip
    stored = json.dumps(photo.to_dict())
    assert not any(serial in stored for serial in SERIALS)
    assert "29.64" not in stored and "gps" not in stored.lower()


@pytest.mark.parametrize("fmt", FORMATS)
def test_capture_facts_survive_every_format(fmt: str) -> None:
    capture = prepare(encode(card(), fmt, exif=exif(1)), LIMITS, GEOMETRY).photo.capture

    assert (capture.model, capture.iso, capture.exposure_time_s) == ("Canon EOS R5", 400, 0.004)


def test_a_photo_without_exif_has_an_empty_capture() -> None:
    photo = prepare(encode(card(), "PNG"), LIMITS, GEOMETRY).photo

    assert photo.capture.is_empty and photo.orientation_applied == 1


def test_gps_and_serial_numbers_never_reach_the_log_even_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = encode(card(), "TIFF", exif=exif(6, gps=True))
    secrets = (*SERIALS, "29.64", str(GPS_LATITUDE))
    caplog.set_level(logging.DEBUG)
    pil = logging.getLogger("PIL")
    # Control: Pillow's TIFF parser does log tag values, serials included, at DEBUG.
    pil.setLevel(logging.DEBUG)
    try:
        prepare(data, LIMITS, GEOMETRY)
    finally:
        pil.setLevel(logging.INFO)
    assert SERIALS[0] in caplog.text
    caplog.clear()

    prepare(data, LIMITS, GEOMETRY)

    assert not any(secret in caplog.text for secret in secrets), caplog.text


# -- the model's size ------------------------------------------------------------------------


def test_the_default_budget_is_448_squared_and_196_image_tokens() -> None:
    assert model_size(448, 448, GEOMETRY) == (448, 448)
    assert image_tokens(448, 448, GEOMETRY) == 196


@pytest.mark.parametrize("size", [(4032, 3024), (3024, 4032), (6000, 4000), (97, 65), (900, 40)])
def test_model_sizes_fit_the_budget_in_whole_patches_and_are_stable(size: tuple[int, int]) -> None:
    tiny = ModelGeometry(65_536, min_pixels=4_096)
    for geometry in (GEOMETRY, tiny):
        width, height = model_size(*size, geometry)
        assert width % 32 == 0 and height % 32 == 0
        assert geometry.min_pixels <= width * height <= geometry.max_pixels
        assert model_size(width, height, geometry) == (width, height)
        assert abs(np.log((width / height) / (size[0] / size[1]))) < 0.35


def test_a_long_panorama_still_fits_the_budget() -> None:
    tiny = ModelGeometry(65_536, min_pixels=4_096)
    width, height = model_size(5000, 30, tiny)

    assert height == 32 and width * height <= 65_536
    assert model_size(width, height, tiny) == (width, height)
