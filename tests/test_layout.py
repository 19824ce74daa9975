"""The packages' import directions: the contract at the centre, producers and workers apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobs", "store", "photos", "notices", "producers", "advisor_worker")


def top_level_imports(package: str) -> dict[str, set[str]]:
    """Module path -> the top-level packages of this project it imports (at any depth)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & set(PACKAGES)
    return found


FORBIDDEN = {
    "producers": {"advisor_worker"},
    "advisor_worker": {"producers"},
    "store": {"producers", "advisor_worker"},
    "photos": {"producers", "advisor_worker"},
    "notices": {"producers", "advisor_worker"},
    "jobs": {"store", "photos", "notices", "producers", "advisor_worker"},
}


def test_the_walk_finds_imports_between_the_packages() -> None:
    assert "jobs" in top_level_imports("store")["store/lifecycle.py"]
    assert "store" in top_level_imports("producers")["producers/client.py"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_package_imports_only_inward(package: str) -> None:
    wrong = {
        module: sorted(names & FORBIDDEN[package])
        for module, names in top_level_imports(package).items()
        if names & FORBIDDEN[package]
    }
    assert wrong == {}
