"""The shipped adapters/ directory: a registry of base only, documented field by field."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.errors import ConfigError
from jobs.variants import _ENTRY_FIELDS, load_registry
from tests.deploy_support import ROOT

ADAPTERS = ROOT / "adapters"
REGISTRY = ADAPTERS / "registry.json"
README = ADAPTERS / "README.md"
TOP_LEVEL_FIELDS = {"variants", "description"}


def documented_fields(section: str) -> set[str]:
    """The backticked names in the first column of the table under `## {section}`."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"adapters/README.md has no section {section!r}"
    return set(re.findall(r"^\| `([a-z_]+)` \|", match.group(1), re.M))


def test_the_shipped_registry_serves_the_base_model_only() -> None:
    registry = load_registry(REGISTRY, "m")
    assert registry.source == REGISTRY
    assert registry.names == {"base"}
    assert registry.get("base").base_model == "m"
    assert set(json.loads(REGISTRY.read_text())) == TOP_LEVEL_FIELDS


def test_the_readme_documents_every_field_of_a_variant_entry() -> None:
    assert documented_fields("Variant entry fields") == _ENTRY_FIELDS


def test_the_readme_documents_exactly_the_top_level_fields_the_loader_accepts(
    tmp_path: Path,
) -> None:
    assert documented_fields("Top-level fields") == TOP_LEVEL_FIELDS
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"description": "d", "variants": {}}))
    assert load_registry(path, "m").names == {"base"}
    path.write_text(json.dumps({"description": "d", "variants": {}, "adapters": {}}))
    with pytest.raises(ConfigError, match="unknown top-level field"):
        load_registry(path, "m")


def test_adapter_directories_are_ignored_while_the_registry_and_readme_are_tracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def is_ignored(path: str) -> bool:
        proc = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, timeout=30
        )
        assert proc.returncode in (0, 1), f"git check-ignore failed for {path}"
        return proc.returncode == 0

    assert is_ignored("adapters/ansel-v1/adapters.safetensors")
    assert is_ignored("adapters/ansel-v1/adapter_config.json")
    assert not is_ignored("adapters/registry.json")
    assert not is_ignored("adapters/README.md")
