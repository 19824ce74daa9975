"""One registry lookup for every process: ADVISOR_REGISTRY, else the data dir's, else base only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import ConfigError, UnknownVariant
from jobs.settings import DEFAULT_BASE_MODEL, Settings
from jobs.variants import BY_DEFAULT, BY_SETTING, find_registry, load_registry_for


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def registry_with_adapter(directory: Path, **top: Any) -> Path:
    (directory / "ansel-v1").mkdir(parents=True, exist_ok=True)
    entry = {"adapter": "ansel-v1", "advisors": ["ansel"]}
    return write(directory / "registry.json", {**top, "variants": {"fine_tuned": entry}})


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with its own adapters/registry.json, which must never be read."""
    cwd = tmp_path / "cwd"
    write(cwd / "adapters" / "registry.json", {"variants": {"wrong": {"adapter": "."}}})
    monkeypatch.chdir(cwd)
    return cwd


def test_unset_without_a_registry_in_the_data_dir_means_base_only(
    tmp_path: Path, elsewhere: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    location = find_registry(settings)
    default = (tmp_path / "data" / "adapters" / "registry.json").resolve()
    assert (location.path, location.chosen_by, location.default) == (None, BY_DEFAULT, default)
    assert location.description == f"base only (no registry file; default lookup {default})"
    registry = load_registry_for(settings)
    assert registry.names == {"base"}
    assert (registry.base_model, registry.base_model_from) == (DEFAULT_BASE_MODEL, "default")
    with pytest.raises(UnknownVariant, match="default lookup .*data/adapters/registry.json"):
        registry.get("fine_tuned")


def test_unset_finds_the_data_dirs_registry_whatever_the_working_directory(
    tmp_path: Path, elsewhere: Path
) -> None:
    path = registry_with_adapter(tmp_path / "data" / "adapters")
    settings = Settings(data_dir=tmp_path / "data")
    location = find_registry(settings)
    assert (location.path, location.chosen_by) == (path.resolve(), BY_DEFAULT)
    assert "default lookup" in location.description
    registry = load_registry_for(settings)
    assert registry.names == {"base", "fine_tuned"}
    assert registry.location == location


def test_a_set_registry_wins_over_the_data_dirs(tmp_path: Path, elsewhere: Path) -> None:
    registry_with_adapter(tmp_path / "data" / "adapters")
    chosen = write(tmp_path / "ops" / "registry.json", {"variants": {}})
    location = find_registry(Settings(data_dir=tmp_path / "data", registry=chosen))
    assert (location.path, location.chosen_by) == (chosen.resolve(), BY_SETTING)
    assert location.description == f"{chosen.resolve()} (set by ADVISOR_REGISTRY)"
    assert load_registry_for(Settings(data_dir=tmp_path / "data", registry=chosen)).names == {
        "base"
    }


def test_a_relative_set_registry_is_made_absolute_against_the_working_directory(
    tmp_path: Path, elsewhere: Path
) -> None:
    location = find_registry(
        Settings(data_dir=tmp_path / "data", registry=Path("adapters/registry.json"))
    )
    assert location.path == (elsewhere / "adapters" / "registry.json").resolve()
    assert location.path.is_absolute()


@pytest.mark.parametrize("make_dir", [False, True], ids=["missing", "a directory"])
def test_a_set_registry_that_is_not_a_file_is_refused_in_one_line(
    tmp_path: Path, make_dir: bool
) -> None:
    missing = tmp_path / "nowhere" / "registry.json"
    if make_dir:
        missing.mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        load_registry_for(Settings(data_dir=tmp_path / "data", registry=missing))
    message = str(info.value)
    assert message.startswith(f"ADVISOR_REGISTRY={missing}: ")
    assert "unset ADVISOR_REGISTRY" in message and "adapters/README.md" in message
    assert "\n" not in message


def test_an_empty_setting_is_unset(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, registry="", base_model=" ")  # type: ignore[arg-type]
    assert (settings.registry, settings.base_model) == (None, None)
    assert find_registry(settings).path is None


def test_relative_adapter_paths_resolve_beside_the_registry_not_the_working_directory(
    tmp_path: Path, elsewhere: Path
) -> None:
    (elsewhere / "ansel-v1").mkdir()  # a decoy where a cwd-relative lookup would land
    path = registry_with_adapter(tmp_path / "data" / "adapters")
    variant = load_registry_for(Settings(data_dir=tmp_path / "data")).get("fine_tuned")
    assert variant.adapter_dir == (path.parent / "ansel-v1").resolve()


def test_the_base_model_comes_from_the_setting_then_the_registry_then_the_default(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    registry_with_adapter(data / "adapters", base_model="./models/tiny")
    from_registry = load_registry_for(Settings(data_dir=data))
    tiny = str((data / "adapters" / "models" / "tiny").resolve())
    assert (from_registry.base_model, from_registry.base_model_from) == (tiny, "registry")
    assert from_registry.get("fine_tuned").base_model == tiny  # variants adapt that base
    from_setting = load_registry_for(Settings(data_dir=data, base_model="org/env-model"))
    assert (from_setting.base_model, from_setting.base_model_from) == (
        "org/env-model",
        "ADVISOR_BASE_MODEL",
    )
    assert from_setting.get("fine_tuned").base_model == "org/env-model"
    registry_with_adapter(data / "adapters", base_model="mlx-community/Some-Model")
    assert load_registry_for(Settings(data_dir=data)).base_model == "mlx-community/Some-Model"
    registry_with_adapter(data / "adapters")
    assert load_registry_for(Settings(data_dir=data)).base_model == DEFAULT_BASE_MODEL


def test_a_variants_own_base_model_applies_to_that_variant_only(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    path = write(
        tmp_path / "registry.json",
        {"base_model": "org/base", "variants": {"other": {"adapter": "a", "base_model": "org/x"}}},
    )
    registry = load_registry_for(Settings(data_dir=tmp_path, registry=path))
    assert (registry.base_model, registry.get("other").base_model) == ("org/base", "org/x")


@pytest.mark.parametrize("value", ["", 7, None])
def test_a_bad_top_level_base_model_is_refused(tmp_path: Path, value: object) -> None:
    path = write(tmp_path / "registry.json", {"base_model": value, "variants": {}})
    with pytest.raises(ConfigError, match="'base_model' must be a non-empty string"):
        load_registry_for(Settings(data_dir=tmp_path, registry=path))
