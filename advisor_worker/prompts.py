"""Prompts: a persona's voice plus the critique instructions. No example scores, ever."""

from __future__ import annotations

from jobs.advisors import Persona
from jobs.analysis import DIMENSIONS, SCORE_MAX, SCORE_MIN
from photos.capture import Capture

# Recorded on every job (prompt_version) so A/B arms compare like with like. "1" is the
# instructions alone (every job before the column existed); "+capture" adds EXIF facts.
PROMPT_VERSION = "1"
CAPTURE_SUFFIX = "+capture"

# Upstream outputs copied example numbers from the prompt; so the instructions hold none
# beyond the scale's bounds, and the JSON shape comes from constrained decoding instead.
_INSTRUCTIONS = """Critique the photograph you are shown, in your own voice and from your own \
practice. Judge what is actually in this image; do not describe an idealised photograph.

Score each of these dimensions as a whole number from {lo} (poor) to {hi} (masterful), \
using the whole scale honestly: {dims}. For each, write a short comment on what you see and \
one concrete recommendation the photographer could act on next time.

Also give: a one-paragraph description of the image, two or three key strengths, two or \
three priority improvements, and brief technical notes (exposure, focus, noise, processing).

Answer with a single JSON object only."""


def system_prompt(persona: Persona) -> str:
    looks_for = "; ".join(persona.looks_for)
    return (
        f"You are {persona.name}, acting as a photography advisor ({persona.focus}). "
        f"{persona.voice} In a photograph you look for: {looks_for}."
    )


def user_prompt(capture: Capture | None = None) -> str:
    """The instructions; with `capture`, the photo's capture facts after them."""
    text = _INSTRUCTIONS.format(lo=SCORE_MIN, hi=SCORE_MAX, dims=", ".join(DIMENSIONS))
    if capture is None:
        return text
    return f"{text}\n\n{capture_facts(capture)}"


def prompt_version(with_capture: bool) -> str:
    return PROMPT_VERSION + (CAPTURE_SUFFIX if with_capture else "")


def capture_facts(capture: Capture) -> str:
    """Capture facts as lines the technical notes can draw on (the Capture whitelist only)."""
    if capture.is_empty:
        return "The file records no capture facts (no EXIF camera or exposure data)."
    lines = []
    make, model = capture.make or "", capture.model or ""
    # "Canon" + "Canon EOS R5", "NIKON CORPORATION" + "NIKON Z 6": the model says it all.
    repeats = bool(make) and model.lower().startswith(make.split()[0].lower())
    camera = model if repeats else f"{make} {model}".strip()
    if camera:
        lines.append(f"- camera: {camera}")
    if capture.lens:
        lines.append(f"- lens: {capture.lens}")
    if capture.focal_length_mm:
        focal = f"- focal length: {capture.focal_length_mm:g} mm"
        if capture.focal_length_35mm:
            focal += f" ({capture.focal_length_35mm} mm in 35 mm terms)"
        lines.append(focal)
    elif capture.focal_length_35mm:
        lines.append(f"- focal length: {capture.focal_length_35mm} mm in 35 mm terms")
    if capture.aperture:
        lines.append(f"- aperture: f/{capture.aperture:g}")
    if capture.exposure_time_s:
        lines.append(f"- exposure time: {_exposure(capture.exposure_time_s)}")
    if capture.iso:
        lines.append(f"- ISO: {capture.iso}")
    if capture.captured_at:
        lines.append(f"- taken: {capture.captured_at}")
    header = (
        "Capture facts from the file's EXIF (use them in the technical notes where they "
        "explain what you see; they describe the camera, not the photograph's quality):"
    )
    return "\n".join([header, *lines])


def _exposure(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"1/{round(1 / seconds)} s"
