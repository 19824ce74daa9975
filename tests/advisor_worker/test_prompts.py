"""Prompts: the capture facts the advisor may use, and the version each job records."""

from __future__ import annotations

import re

from advisor_worker import prompts
from photos.capture import Capture

CAPTURE = Capture(
    make="NIKON CORPORATION", model="NIKON Z 6", lens="NIKKOR Z 24-70mm f/4 S",
    focal_length_mm=35.0, focal_length_35mm=35, aperture=5.6, exposure_time_s=0.008,
    iso=200, captured_at="2026-05-01T18:03:22+02:00",
)  # fmt: skip


def test_capture_facts_follow_the_instructions_one_per_line() -> None:
    text = prompts.user_prompt(CAPTURE)

    assert text.startswith(prompts.user_prompt())
    facts = text.removeprefix(prompts.user_prompt())
    for line in (
        "- camera: NIKON Z 6",
        "- lens: NIKKOR Z 24-70mm f/4 S",
        "- focal length: 35 mm (35 mm in 35 mm terms)",
        "- aperture: f/5.6",
        "- exposure time: 1/125 s",
        "- ISO: 200",
        "- taken: 2026-05-01T18:03:22+02:00",
    ):
        assert line in facts.splitlines(), line


def test_a_photo_without_exif_says_so_instead_of_leaving_the_model_to_guess() -> None:
    assert prompts.user_prompt(Capture()).endswith("(no EXIF camera or exposure data).")


def test_long_exposures_are_written_in_seconds() -> None:
    assert "- exposure time: 2.5 s" in prompts.capture_facts(Capture(exposure_time_s=2.5))


def test_the_prompt_version_names_the_capture_arm() -> None:
    assert prompts.prompt_version(False) == "1"
    assert prompts.prompt_version(True) == "1+capture"


def test_the_instructions_still_hold_no_example_numbers() -> None:
    numbers = set(re.findall(r"\d+", prompts.user_prompt()))
    assert numbers == {"1", "10"}  # the scale's bounds only
