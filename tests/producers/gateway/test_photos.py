"""Photos as photographers send them, through the live gateway and real tiny-model workers."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from photos.formats import ACCEPTED
from producers.views import job_to_dict
from tests.photo_files import (
    ADOBE_RGB,
    BOTTOM_LEFT,
    BOTTOM_RIGHT,
    CARD_SIZE,
    SERIALS,
    SWOP_CMYK,
    TOP_LEFT,
    TOP_RIGHT,
    card,
    copy_artifact,
    display_p3_profile,
    encode,
    exif,
    gray16,
    is_close,
    oriented,
    png16,
    private_leftovers,
    quadrants,
    refused_files,
    srgb_of,
    system_profile,
    tiff16,
)
from tests.producers.gateway.conftest import Stack, follow
from tests.support import run_command

UPRIGHT = (TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT)
GPS_TEXT = ("29.64", "40.08", "2964/100")  # in the file as rationals


def upload(stack: Stack, files: dict[str, tuple[bytes, str]]) -> dict[str, dict[str, Any]]:
    """POST each file as a multipart upload, then follow every job to its end."""
    ids = {}
    with stack.client() as client:
        for name, (data, mime) in files.items():
            response = client.post(
                "/analyze", files={"file": (name, data, mime)}, data={"advisor": "ansel"}
            )
            assert response.status_code == 202, (name, response.text)
            ids[name] = response.json()["job_id"]
        jobs = {name: follow(client, job_id) for name, job_id in ids.items()}
    for name, job in jobs.items():
        assert job["status"] == "succeeded", (name, job["error_kind"], job["error"])
    return jobs


def model_input(stack: Stack, job: dict[str, Any]) -> Image.Image:
    """The exact image the worker handed the model for this job."""
    path = stack.root / "model-inputs" / f"{job['id']}.png"
    with Image.open(path) as img:
        img.load()
    assert img.size == (job["model_image_width"], job["model_image_height"])
    return img


def centre(img: Image.Image) -> tuple[int, ...]:
    return tuple(img.getpixel((img.width // 2, img.height // 2)))  # type: ignore[arg-type]


def test_each_exif_orientation_reaches_the_model_upright(stack: Stack) -> None:
    files = {f"o{n}.jpg": (oriented("JPEG", n), "image/jpeg") for n in range(1, 9)}
    files["portrait.heic"] = (oriented("HEIF", 6), "image/heic")

    jobs = upload(stack, files)

    for name, job in jobs.items():
        seen = model_input(stack, job)
        assert seen.size == CARD_SIZE, name
        assert all(is_close(s, e, 40) for s, e in zip(quadrants(seen), UPRIGHT, strict=True))
        expected = 6 if name == "portrait.heic" else int(name[1])
        assert job["photo"]["orientation_applied"] == expected, name
        assert (job["photo"]["width"], job["photo"]["height"]) == CARD_SIZE
        assert job["image_tokens"] == (CARD_SIZE[0] // 32) * (CARD_SIZE[1] // 32)
    for name in ("o6.jpg", "o8.jpg", "portrait.heic"):
        path = stack.root / "model-inputs" / f"{jobs[name]['id']}.png"
        copy_artifact(f"model-input-rotated-{name.replace('.', '-')}", path)


def test_heic_avif_and_16_bit_png_and_tiff_are_analysed(stack: Stack) -> None:
    colour = (200, 120, 40)
    files = {
        "photo.heic": (encode(Image.new("RGB", (96, 64), colour), "HEIF"), "image/heic"),
        "photo.avif": (encode(Image.new("RGB", (96, 64), colour), "AVIF"), "image/avif"),
        "deep.png": (png16((0xC8C8, 0x7878, 0x2828), (96, 64)), "image/png"),
        "deep.tif": (tiff16((0xC8C8, 0x7878, 0x2828), (96, 64)), "image/tiff"),
        "grey16.png": (gray16(40_000, "PNG", (96, 64)), "image/png"),
    }

    jobs = upload(stack, files)

    formats = {name: job["photo"]["format"] for name, job in jobs.items()}
    assert formats == {"photo.heic": "HEIF", "photo.avif": "AVIF", "deep.png": "PNG",
                       "deep.tif": "TIFF", "grey16.png": "PNG"}  # fmt: skip
    for name in ("photo.heic", "photo.avif", "deep.png", "deep.tif"):
        assert is_close(centre(model_input(stack, jobs[name])), colour, 4), name
    assert is_close(centre(model_input(stack, jobs["grey16.png"])), (156, 156, 156), 1)


def test_wide_gamut_and_cmyk_photos_reach_the_model_as_littlecms_makes_them_srgb(
    stack: Stack,
) -> None:
    p3, adobe, swop = display_p3_profile(), system_profile(ADOBE_RGB), system_profile(SWOP_CMYK)
    cases: dict[str, tuple[bytes, str, tuple[int, ...]]] = {
        "p3.jpg": (
            encode(Image.new("RGB", (96, 64), (200, 60, 50)), "JPEG", icc_profile=p3,
                   quality=100, subsampling=0),
            "image/jpeg", srgb_of((200, 60, 50), "RGB", p3),
        ),
        "adobe.png": (
            encode(Image.new("RGB", (96, 64), (60, 170, 90)), "PNG", icc_profile=adobe),
            "image/png", srgb_of((60, 170, 90), "RGB", adobe),
        ),
        "print.tif": (
            encode(Image.new("CMYK", (96, 64), (10, 170, 200, 30)), "TIFF", icc_profile=swop),
            "image/tiff", srgb_of((10, 170, 200, 30), "CMYK", swop),
        ),
    }  # fmt: skip

    jobs = upload(stack, {name: (data, mime) for name, (data, mime, _) in cases.items()})

    for name, (_data, _mime, expected) in cases.items():
        seen = centre(model_input(stack, jobs[name]))
        assert is_close(seen, expected, 2), (name, seen, expected)
    profiles = {name: job["photo"]["color_profile"] for name, job in jobs.items()}
    assert profiles == {"p3.jpg": "Display P3", "adobe.png": "Compatible with Adobe RGB (1998)",
                        "print.tif": "Artifex CMYK SWOP Profile"}  # fmt: skip
    for name, artifact in (
        ("p3.jpg", "model-input-display-p3"),
        ("adobe.png", "model-input-adobe"),
    ):
        copy_artifact(artifact, stack.root / "model-inputs" / f"{jobs[name]['id']}.png")


def test_palette_and_alpha_images_are_analysed_on_white(stack: Stack) -> None:
    palette = card().quantize(8)
    files = {
        "palette.png": (encode(palette, "PNG"), "image/png"),
        "alpha.png": (encode(Image.new("RGBA", (96, 64), (255, 0, 0, 128)), "PNG"), "image/png"),
        "grey-alpha.png": (encode(Image.new("LA", (96, 64), (0, 0)), "PNG"), "image/png"),
        "alpha.webp": (encode(Image.new("RGBA", (96, 64), (0, 0, 255, 0)), "WEBP",
                              lossless=True), "image/webp"),
    }  # fmt: skip

    jobs = upload(stack, files)

    assert is_close(centre(model_input(stack, jobs["alpha.png"])), (255, 127, 127), 1)
    assert centre(model_input(stack, jobs["grey-alpha.png"])) == (255, 255, 255)
    assert centre(model_input(stack, jobs["alpha.webp"])) == (255, 255, 255)
    seen = quadrants(model_input(stack, jobs["palette.png"]))
    assert all(is_close(s, e, 12) for s, e in zip(seen, UPRIGHT, strict=True))


@pytest.mark.parametrize("kind", list(refused_files()))
@pytest.mark.parametrize("how", ["upload", "base64"])
def test_refused_formats_answer_415_with_the_accepted_list_and_write_no_row(
    stack: Stack, kind: str, how: str
) -> None:
    data = refused_files()[kind]
    before = len(stack.repo.find())
    with stack.client() as client:
        if how == "upload":
            response = client.post(
                "/analyze",
                files={"file": ("photo", data, "application/octet-stream")},
                data={"advisor": "ansel"},
            )
        else:
            body = {"image_base64": base64.b64encode(data).decode(), "advisor": "ansel"}
            response = client.post("/analyze", json=body)

    assert response.status_code == 415, response.text
    problem = response.json()
    assert problem["error"] == "unsupported_format"
    assert problem["accepted"] == list(ACCEPTED)
    name = kind.removeprefix("RAW ").split()[0]
    assert name in problem["detected"] and name in problem["message"]
    assert "JPEG, PNG, WebP, HEIC/HEIF, AVIF, TIFF (single page)" in problem["message"]
    if kind.startswith("RAW"):
        assert "send the camera's JPEG or HEIC" in problem["message"]
    assert len(stack.repo.find()) == before


def test_uploads_with_gps_are_stored_without_it_and_analysed_as_the_same_photo(
    stack: Stack,
) -> None:
    kinds = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"),
             "webp": ("WEBP", "image/webp"), "tif": ("TIFF", "image/tiff"),
             "avif": ("AVIF", "image/avif"), "heic": ("HEIF", "image/heic")}  # fmt: skip
    portrait = card().transpose(Image.Transpose.ROTATE_90)  # upright once EXIF 6 is undone
    files = {
        f"{kind}.{ext}": (encode(portrait, fmt, exif=exif(6, gps=kind == "gps")), mime)
        for ext, (fmt, mime) in kinds.items()
        for kind in ("gps", "plain")
    }

    jobs = upload(stack, files)

    for ext, (fmt, _mime) in kinds.items():
        located, plain = jobs[f"gps.{ext}"], jobs[f"plain.{ext}"]
        stored = stack.repo.image_bytes(stack.repo.get(located["id"]).image_sha256)
        assert stored is not None and private_leftovers(stored) == [], ext
        plain_sha = stack.repo.get(plain["id"]).image_sha256
        assert stack.repo.image_bytes(plain_sha) == files[f"plain.{ext}"][0], ext
        assert located["photo"] == plain["photo"], ext
        assert located["photo"]["format"] == fmt and located["photo"]["orientation_applied"] == 6
        seen, twin = model_input(stack, located), model_input(stack, plain)
        assert seen.size == CARD_SIZE, ext
        assert all(is_close(s, e, 40) for s, e in zip(quadrants(seen), UPRIGHT, strict=True))
        difference = np.asarray(seen, np.int16) - np.asarray(twin, np.int16)
        assert np.abs(difference).max() <= 1, ext


def test_capture_facts_round_trip_and_gps_stays_out_of_the_row_the_logs_and_the_prompt(
    stack: Stack,
) -> None:
    data = encode(card(), "JPEG", exif=exif(1, gps=True))
    assert SERIALS[0].encode() in data  # the file does carry them

    [job] = upload(stack, {"gps.jpg": (data, "image/jpeg")}).values()

    assert job["photo"]["capture"] == {
        "make": "Canon", "model": "Canon EOS R5", "lens": "Canon RF50mm F1.8 STM",
        "focal_length_mm": 50.0, "focal_length_35mm": 50, "aperture": 2.8,
        "exposure_time_s": 0.004, "iso": 400, "captured_at": "2026-05-01T18:03:22+02:00",
    }  # fmt: skip
    assert job["prompt_version"] == "1+capture"
    prompt = (stack.root / "model-inputs" / f"{job['id']}.txt").read_text()
    for fact in ("camera: Canon EOS R5", "f/2.8", "1/250 s", "ISO: 400", "50 mm"):
        assert fact in prompt, fact
    row = json.dumps(job_to_dict(stack.repo.get(job["id"])))
    logs = stack.gateway_output() + "".join(w.output() for w in stack.workers)
    for place, text in (("row", row), ("prompt", prompt), ("logs", logs)):
        for secret in (*SERIALS, *GPS_TEXT):
            assert secret not in text, (place, secret)
        assert "gps" not in text.lower(), place
    status = run_command("producers.cli", ["status", job["id"]], stack.env.full())
    assert status.returncode == 0, status.stderr
    [line] = [li for li in status.stdout.splitlines() if li.startswith("photo: ")]
    assert json.loads(line.removeprefix("photo: ")) == job["photo"]
