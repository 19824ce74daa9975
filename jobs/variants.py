"""Variant registry: name -> base model, adapter directory, advisors served, serving mode."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.contracts import BASE_VARIANT, is_valid_variant_name
from jobs.errors import ConfigError, UnknownVariant

SERVING_MODES = ("unfused", "fused")
_ENTRY_FIELDS = {"adapter", "advisors", "description", "serving", "base_model", "fingerprint"}
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Variant:
    name: str
    base_model: str
    adapter_dir: Path | None = None
    advisors: frozenset[str] | None = None  # None: serves every advisor
    description: str = ""
    serving: str = "unfused"
    # Optional pin: the sha256 the adapter files must have (advisor-worker check prints it).
    fingerprint: str | None = None

    @property
    def is_base(self) -> bool:
        return self.adapter_dir is None

    def serves(self, advisor: str) -> bool:
        return self.advisors is None or advisor in self.advisors


@dataclass(frozen=True)
class Registry:
    variants: dict[str, Variant]
    active_model: str = BASE_VARIANT
    source: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise UnknownVariant(
                f"Unknown variant {name!r}; known: {sorted(self.variants)}"
                + (f" (registry {self.source})" if self.source else "")
            ) from None

    @property
    def names(self) -> set[str]:
        return set(self.variants)

    def variants_for(self, advisor: str) -> list[Variant]:
        return [v for v in self.variants.values() if v.serves(advisor)]


def load_registry(path: Path, base_model: str) -> Registry:
    """Read the registry file; a missing file means base only. All problems reported at once."""
    base = Variant(BASE_VARIANT, base_model, description="the base model")
    if not path.exists():
        return Registry({BASE_VARIANT: base}, source=None)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Registry {path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Registry {path}: expected a JSON object")
    if "models" in data:
        return _from_seed_config(data, path, base)
    return _from_registry(data, path, base)


def _from_registry(data: dict[str, Any], path: Path, base: Variant) -> Registry:
    problems: list[str] = []
    variants = {BASE_VARIANT: base}
    unknown_top = set(data) - {"variants", "description"}
    if unknown_top:
        problems.append(f"unknown top-level field(s) {sorted(unknown_top)}; expected 'variants'")
    entries = data.get("variants", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"Registry {path}: 'variants' must be an object of name -> entry")
    for name, entry in entries.items():
        where = f"variant {name!r}"
        if not is_valid_variant_name(name):
            problems.append(f"{where}: name must be lowercase letters, digits, _ or -")
            continue
        if name == BASE_VARIANT:
            problems.append(f"{where}: 'base' is implicit (ADVISOR_BASE_MODEL); remove it")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object")
            continue
        unknown = set(entry) - _ENTRY_FIELDS
        if unknown:
            problems.append(f"{where}: unknown field(s) {sorted(unknown)}")
        adapter = entry.get("adapter")
        if not isinstance(adapter, str) or not adapter:
            problems.append(f"{where}: 'adapter' (a directory) is required")
            continue
        adapter_dir = (path.parent / adapter).resolve()
        if not adapter_dir.is_dir():
            problems.append(f"{where}: adapter directory {adapter_dir} does not exist")
        advisors = entry.get("advisors")
        if advisors is not None and not (
            isinstance(advisors, list) and all(isinstance(a, str) for a in advisors)
        ):
            problems.append(f"{where}: 'advisors' must be a list of advisor names")
            advisors = None
        serving = entry.get("serving", "unfused")
        if serving not in SERVING_MODES:
            problems.append(f"{where}: 'serving' must be one of {list(SERVING_MODES)}")
        fingerprint = entry.get("fingerprint")
        if fingerprint is not None and not (
            isinstance(fingerprint, str) and _FINGERPRINT.match(fingerprint)
        ):
            problems.append(f"{where}: 'fingerprint' must be 64 lowercase hex digits (sha256)")
        base_model = entry.get("base_model", base.base_model)
        if not isinstance(base_model, str) or not base_model:
            problems.append(f"{where}: 'base_model' must be a non-empty string")
        variants[name] = Variant(
            name=name,
            base_model=str(base_model),
            adapter_dir=adapter_dir,
            advisors=frozenset(advisors) if advisors is not None else None,
            description=str(entry.get("description", "")),
            serving=serving,
            fingerprint=fingerprint,
        )
    if problems:
        raise ConfigError(f"Registry {path}:\n  " + "\n  ".join(problems))
    return Registry(variants, source=path)


def _from_seed_config(data: dict[str, Any], path: Path, base: Variant) -> Registry:
    """The seed's config/model_config.json: models {name: {id | lora_path, description}}.

    The entry without a lora_path is the base model (its `id`, if any, replaces
    ADVISOR_BASE_MODEL, as the seed loaded it); relative lora_paths resolve against this
    file's directory, like the registry's adapter paths.
    """
    problems: list[str] = []
    models = data.get("models")
    if not isinstance(models, dict):
        raise ConfigError(f"Registry {path}: 'models' must be an object")
    base_names: list[str] = []
    base_model = base.base_model
    for name, entry in models.items():
        if not isinstance(entry, dict):
            problems.append(f"model {name!r}: expected an object")
        elif entry.get("lora_path") in (None, ""):
            base_names.append(name)
            if "id" in entry:
                base_model = str(entry["id"])
    if len(base_names) > 1:
        problems.append(f"models {base_names}: more than one base entry (no lora_path)")
    variants = {BASE_VARIANT: Variant(BASE_VARIANT, base_model, description="the base model")}
    for name, entry in models.items():
        if not isinstance(entry, dict) or name in base_names:
            continue
        variant_name = name.replace(".", "_").lower()
        lora_path = entry["lora_path"]
        if not is_valid_variant_name(variant_name) or variant_name == BASE_VARIANT:
            problems.append(f"model {name!r}: not usable as a variant name")
            continue
        if not isinstance(lora_path, str):
            problems.append(f"model {name!r}: lora_path must be a string")
            continue
        adapter_dir = (path.parent / lora_path).resolve()
        if not adapter_dir.is_dir():
            problems.append(f"model {name!r}: lora_path {adapter_dir} does not exist")
        variants[variant_name] = Variant(
            variant_name, base_model, adapter_dir, None, str(entry.get("description", ""))
        )
    active = str(data.get("active_model", BASE_VARIANT))
    active = BASE_VARIANT if active in base_names else active.replace(".", "_").lower()
    if active not in variants:
        problems.append(f"active_model {active!r} is not one of {sorted(variants)}")
    if problems:
        raise ConfigError(f"Registry {path}:\n  " + "\n  ".join(problems))
    return Registry(variants, active_model=active, source=path)
