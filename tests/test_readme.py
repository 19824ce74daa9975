"""The README stays a first page: short, its links resolve, its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from producers.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_200_lines() -> None:
    assert len(README.splitlines()) <= 200


def test_every_relative_link_in_the_readme_names_a_file_that_exists() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith("http")]
    assert local, "the README links its topic pages"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_every_advisor_command_the_readme_shows_is_a_command_of_the_cli() -> None:
    shown = set(re.findall(r"^advisor ([a-z][a-z-]*)", README, flags=re.M))
    assert {"submit", "status", "rollout", "report", "guard", "capacity"} <= shown
    known = set(build_parser([], full=True)._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert shown - known == set()
