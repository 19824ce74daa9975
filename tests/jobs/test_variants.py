"""The variant registry: its own JSON shape, the seed's model_config.json, and refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import ConfigError, UnknownVariant
from jobs.variants import load_registry

FINGERPRINT = "ab" * 32


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_no_registry_file_means_the_base_model_only() -> None:
    registry = load_registry(None, "some/model")
    assert registry.names == {"base"}
    assert registry.get("base").base_model == "some/model"
    assert registry.get("base").is_base


def test_a_registry_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent.json: no such file"):
        load_registry(tmp_path / "absent.json", "some/model")


def test_registry_entries_resolve_adapters_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "adapters" / "ansel-v1").mkdir(parents=True)
    entry = {
        "adapter": "ansel-v1",
        "advisors": ["ansel"],
        "serving": "fused",
        "fingerprint": FINGERPRINT,
        "description": "first Ansel fine-tune",
    }
    path = write(tmp_path / "adapters" / "registry.json", {"variants": {"fine_tuned": entry}})
    variant = load_registry(path, "some/model").get("fine_tuned")
    assert variant.adapter_dir == (tmp_path / "adapters" / "ansel-v1").resolve()
    assert (variant.base_model, variant.serving, variant.fingerprint) == (
        "some/model",
        "fused",
        FINGERPRINT,
    )
    assert variant.serves("ansel") and not variant.serves("weston")


def test_every_registry_problem_is_reported_at_once_with_its_entry(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    path = write(
        tmp_path / "registry.json",
        {
            "varaints": {},
            "variants": {
                "Bad Name": {"adapter": "ok"},
                "base": {"adapter": "ok"},
                "missing": {"adapter": "nowhere"},
                "typo": {"adapter": "ok", "servng": "fused"},
                "mode": {"adapter": "ok", "serving": "merged"},
                "pin": {"adapter": "ok", "fingerprint": "abc"},
            },
        },
    )
    with pytest.raises(ConfigError) as info:
        load_registry(path, "m")
    message = str(info.value)
    for expected in (
        "unknown top-level field(s) ['varaints']",
        "variant 'Bad Name': name must be lowercase",
        "variant 'base': 'base' is implicit",
        f"variant 'missing': adapter directory {(tmp_path / 'nowhere').resolve()} does not exist",
        "variant 'typo': unknown field(s) ['servng']",
        "variant 'mode': 'serving' must be one of ['unfused', 'fused']",
        "variant 'pin': 'fingerprint' must be 64 lowercase hex digits",
    ):
        assert expected in message


def test_the_seeds_model_config_is_accepted_as_a_registry(tmp_path: Path) -> None:
    # The example from the seed's integration guide, adapters placed beside the file.
    for name in ("qwen3-vl-4b-lora-ansel-v1", "qwen3-vl-4b-lora-ansel-v2"):
        (tmp_path / "config" / "models" / name).mkdir(parents=True)
    seed = {
        "models": {
            "base": {"id": "Qwen/Qwen3-VL-4B-Instruct", "description": "Base model"},
            "ansel_v1": {"lora_path": "./models/qwen3-vl-4b-lora-ansel-v1", "description": "v1"},
            "ansel_v2": {"lora_path": "./models/qwen3-vl-4b-lora-ansel-v2", "description": "v2"},
        },
        "active_model": "base",
    }
    path = write(tmp_path / "config" / "model_config.json", seed)
    registry = load_registry(path)
    assert registry.names == {"base", "ansel_v1", "ansel_v2"}
    # The seed's base id is the model every variant adapts, unless ADVISOR_BASE_MODEL is set.
    assert {v.base_model for v in registry.variants.values()} == {"Qwen/Qwen3-VL-4B-Instruct"}
    assert registry.base_model_from == "registry"
    overridden = load_registry(path, "env/model")
    assert {v.base_model for v in overridden.variants.values()} == {"env/model"}
    assert (
        registry.get("ansel_v2").adapter_dir
        == (tmp_path / "config" / "models" / "qwen3-vl-4b-lora-ansel-v2").resolve()
    )
    with pytest.raises(UnknownVariant, match="known: \\['ansel_v1', 'ansel_v2', 'base'\\]"):
        registry.get("ansel_v3")


def test_a_seed_base_entry_under_another_name_is_the_base_variant(tmp_path: Path) -> None:
    seed = {
        "models": {"qwen": {"id": "Qwen/Qwen3-VL-4B-Instruct", "lora_path": None}},
        "active_model": "qwen",
    }
    registry = load_registry(write(tmp_path / "model_config.json", seed))
    assert registry.names == {"base"}
    assert registry.base_model == "Qwen/Qwen3-VL-4B-Instruct"


def test_the_seeds_active_model_is_checked_but_the_rollout_split_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "v1").mkdir()
    seed = {"models": {"base": {"id": "x/base"}, "ansel_v1": {"lora_path": "v1"}}}
    registry = load_registry(write(tmp_path / "a.json", seed | {"active_model": "ansel_v1"}))
    assert registry.names == {"base", "ansel_v1"}
    assert not hasattr(registry, "active_model")  # nothing downstream can act on it
    assert "active_model 'ansel_v1' is not applied" in caplog.text
    assert "advisor rollout set" in caplog.text
    with pytest.raises(ConfigError, match="active_model 'ansel_v9' is not one of"):
        load_registry(write(tmp_path / "b.json", seed | {"active_model": "ansel_v9"}))


def test_a_seed_config_with_two_base_entries_is_refused(tmp_path: Path) -> None:
    seed = {"models": {"a": {"id": "x/one"}, "b": {"id": "x/two"}}, "active_model": "a"}
    with pytest.raises(ConfigError, match="more than one base entry"):
        load_registry(write(tmp_path / "model_config.json", seed))
