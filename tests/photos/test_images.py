"""Image input boundaries: confined paths, byte and pixel limits, bombs, undecodable bytes."""

from __future__ import annotations

import base64
import io
import os
import zlib
from pathlib import Path

import pytest
from PIL import Image

from jobs.errors import InvalidImage, UnsupportedFormat
from photos.formats import sniff
from photos.intake import Limits, ModelGeometry, confine, decode_base64, read_path, verify

LIMITS = Limits(max_bytes=50_000, max_pixels=1_000_000)
GEOMETRY = ModelGeometry(448 * 448)


def png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(side: int = 30_000) -> bytes:
    """A valid PNG header claiming side x side pixels, with a body of a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    body = zlib.compress(b"\x00" * (side * 3 + 1) * 8, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    root = tmp_path / "photos"
    (root / "2026").mkdir(parents=True)
    (root / "2026" / "a.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    return [root]


def test_a_relative_path_under_a_root_is_read(roots: list[Path]) -> None:
    assert read_path("2026/a.png", roots, LIMITS) == png()


def test_a_path_climbing_out_with_dot_dot_is_refused(roots: list[Path]) -> None:
    with pytest.raises(InvalidImage, match=r"contains '\.\.'"):
        read_path("2026/../../secret.png", roots, LIMITS)


def test_an_absolute_path_outside_the_roots_is_refused(roots: list[Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="outside the allowed roots"):
        read_path(tmp_path / "secret.png", roots, LIMITS)


def test_a_symlink_pointing_outside_the_roots_is_refused(roots: list[Path], tmp_path: Path) -> None:
    (roots[0] / "innocent.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(InvalidImage, match="symlinks are resolved first"):
        confine("innocent.png", roots)


def test_paths_are_refused_with_the_way_out_when_no_root_is_configured() -> None:
    with pytest.raises(InvalidImage, match="set ADVISOR_IMAGE_ROOTS"):
        confine("a.png", [])


def test_a_missing_file_is_named(roots: list[Path]) -> None:
    with pytest.raises(InvalidImage, match="'2026/b.png' not found"):
        read_path("2026/b.png", roots, LIMITS)


def test_a_file_over_the_byte_limit_is_refused_before_reading(roots: list[Path]) -> None:
    (roots[0] / "big.bin").write_bytes(b"\0" * (LIMITS.max_bytes + 1))
    with pytest.raises(InvalidImage, match="50001 bytes; the limit is 50000"):
        read_path("big.bin", roots, LIMITS)


def test_inline_base64_over_the_limit_is_refused_before_decoding() -> None:
    text = "A" * (LIMITS.max_bytes * 2)
    with pytest.raises(InvalidImage, match="exceeds the 50000-byte limit"):
        decode_base64(text, LIMITS)


def test_invalid_base64_is_named() -> None:
    with pytest.raises(InvalidImage, match="not valid base64"):
        decode_base64("not*base64", LIMITS)
    assert decode_base64(base64.b64encode(png()).decode(), LIMITS) == png()


def test_too_many_pixels_are_refused_with_the_setting_to_change() -> None:
    with pytest.raises(InvalidImage, match=r"1001x1000 = 1001000 pixels.*MAX_IMAGE_PIXELS"):
        verify(png(1001, 1000), Limits(10_000_000, 1_000_000), GEOMETRY)


def test_a_decompression_bomb_is_refused_from_its_header_alone() -> None:
    bomb = png_bomb()
    assert len(bomb) < 5_000
    with pytest.raises(InvalidImage, match=r"too many pixels.*900000000 pixels.*limit is 1000000"):
        verify(bomb, LIMITS, GEOMETRY)


def test_bytes_that_are_no_image_get_a_message_without_object_addresses() -> None:
    with pytest.raises(UnsupportedFormat) as info:
        verify(b"this is a text file, not a photo", LIMITS, GEOMETRY)
    assert "not recognised (32 bytes); send one of: JPEG, PNG, WebP, HEIC/HEIF" in str(info.value)
    assert "0x" not in str(info.value)


def test_a_truncated_image_is_refused_as_undecodable() -> None:
    with pytest.raises(InvalidImage, match="cannot be decoded"):
        verify(png(200, 200)[:-40], LIMITS, GEOMETRY)


def test_an_empty_image_is_refused() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        verify(b"", LIMITS, GEOMETRY)


def test_a_good_image_reports_its_size_format_and_digest() -> None:
    checked = verify(png(), LIMITS, GEOMETRY)
    assert (checked.photo.width, checked.photo.height, checked.photo.format) == (40, 30, "PNG")
    assert checked.ref == f"sha256:{checked.sha256}" and checked.is_stored


REFUSED_BY_NAME = {
    "EPS": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    "PDF": b"%PDF-1.7\n1 0 obj\n",
    "PSD (Photoshop)": b"8BPS\x00\x01" + b"\x00" * 30,
    "GIF": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    "BMP": b"BM" + b"\x00" * 60,
}


@pytest.mark.parametrize("name", sorted(REFUSED_BY_NAME))
def test_formats_outside_the_allowlist_are_refused_by_name_before_any_decoder(name: str) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        verify(REFUSED_BY_NAME[name], LIMITS, GEOMETRY)
    assert info.value.detected == name
    assert str(info.value).startswith(f"{name} is not accepted; send one of: JPEG, PNG, WebP")


def test_the_allowlist_names_the_common_formats_by_their_signatures() -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    webp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(webp, format="WEBP")
    assert [sniff(d) for d in (jpeg.getvalue(), png(), webp.getvalue())] == [
        "JPEG", "PNG", "WEBP"
    ]  # fmt: skip


def test_an_eps_behind_a_jpeg_signature_is_only_ever_parsed_as_jpeg() -> None:
    disguised = b"\xff\xd8\xff" + REFUSED_BY_NAME["EPS"]
    with pytest.raises(InvalidImage, match="not a readable JPEG|JPEG image cannot be decoded"):
        verify(disguised, LIMITS, GEOMETRY)


def test_a_symlink_loop_under_a_root_is_an_invalid_image(roots: list[Path]) -> None:
    (roots[0] / "loop-a").symlink_to(roots[0] / "loop-b")
    (roots[0] / "loop-b").symlink_to(roots[0] / "loop-a")
    with pytest.raises(InvalidImage, match="cannot be resolved"):
        read_path("loop-a", roots, LIMITS)


def test_a_nul_byte_in_a_path_is_an_invalid_image(roots: list[Path]) -> None:
    with pytest.raises(InvalidImage, match="cannot be resolved"):
        read_path("2026/a\x00.png", roots, LIMITS)


def test_an_unreadable_file_is_an_invalid_image(roots: list[Path]) -> None:
    target = roots[0] / "2026" / "a.png"
    target.chmod(0)
    try:
        if os.access(target, os.R_OK):
            # root reads anything; a directory in place of the file fails the same way.
            target.unlink()
            target.mkdir()
        with pytest.raises(InvalidImage):
            read_path("2026/a.png", roots, LIMITS)
    finally:
        target.chmod(0o644)
