"""Variant registry: name -> base model, adapter directory, advisors served, serving mode.

Every process finds its registry the same way, through `find_registry` (and loads it with
`load_registry_for`): ADVISOR_REGISTRY if set (a missing file is an error), else
$ADVISOR_DATA_DIR/adapters/registry.json if it exists, else base only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.contracts import BASE_VARIANT, is_valid_variant_name
from jobs.errors import ConfigError, UnknownVariant
from jobs.settings import DEFAULT_BASE_MODEL, Settings

logger = logging.getLogger(__name__)

SERVING_MODES = ("unfused", "fused")
_ENTRY_FIELDS = {"adapter", "advisors", "description", "serving", "base_model", "fingerprint"}
_TOP_FIELDS = {"variants", "description", "base_model"}
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
# How a registry was found; printed by `advisor rollout show` and `advisor-worker check`.
BY_SETTING = "ADVISOR_REGISTRY"
BY_DEFAULT = "default lookup"
# Where the base model came from.
FROM_SETTING = "ADVISOR_BASE_MODEL"
FROM_REGISTRY = "registry"
FROM_DEFAULT = "default"


@dataclass(frozen=True)
class RegistryLocation:
    """The registry file this process uses (None: none, base only) and how it was chosen."""

    path: Path | None
    chosen_by: str  # BY_SETTING or BY_DEFAULT
    default: Path  # where the default lookup looks

    @property
    def description(self) -> str:
        if self.path is None:
            return f"base only (no registry file; default lookup {self.default})"
        if self.chosen_by == BY_SETTING:
            return f"{self.path} (set by ADVISOR_REGISTRY)"
        return f"{self.path} (default lookup: $ADVISOR_DATA_DIR/adapters/registry.json)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path else None,
            "chosen_by": self.chosen_by,
            "default": str(self.default),
            "description": self.description,
        }


def find_registry(settings: Settings) -> RegistryLocation:
    """The one registry lookup every process uses; a configured but missing file is an error."""
    default = settings.default_registry
    if settings.registry is not None:
        path = settings.registry.expanduser().resolve()
        if not path.is_file():
            problem = "a directory, not a file" if path.is_dir() else "no such file"
            raise ConfigError(
                f"ADVISOR_REGISTRY={path}: {problem}; create it (see adapters/README.md) "
                f"or unset ADVISOR_REGISTRY to use {default}"
            )
        return RegistryLocation(path, BY_SETTING, default)
    if default.is_file():
        return RegistryLocation(default, BY_DEFAULT, default)
    return RegistryLocation(None, BY_DEFAULT, default)


def load_registry_for(settings: Settings) -> Registry:
    """The registry `find_registry` names, with ADVISOR_BASE_MODEL (if set) as the base."""
    location = find_registry(settings)
    return load_registry(location.path, settings.base_model, location=location)


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
    source: Path | None = None
    # How this process found the file (None: loaded from a path given directly).
    location: RegistryLocation | None = None
    base_model_from: str = FROM_DEFAULT  # FROM_SETTING, FROM_REGISTRY or FROM_DEFAULT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str:
        return self.variants[BASE_VARIANT].base_model

    def describe(self) -> str:
        """One line: which registry, and which base model from where."""
        return f"{self.where}; base model {self.base_model} (from {self.base_model_from})"

    def get(self, name: str) -> Variant:
        try:
            return self.variants[name]
        except KeyError:
            raise UnknownVariant(
                f"Unknown variant {name!r}; known: {sorted(self.variants)} ({self.where})"
            ) from None

    @property
    def where(self) -> str:
        """The registry in words: its location as found, else its file, else base only."""
        if self.location is not None:
            return f"registry {self.location.description}"
        return f"registry {self.source}" if self.source else "no registry: base only"

    @property
    def names(self) -> set[str]:
        return set(self.variants)

    def variants_for(self, advisor: str) -> list[Variant]:
        return [v for v in self.variants.values() if v.serves(advisor)]


def load_registry(
    path: Path | None, base_model: str | None = None, *, location: RegistryLocation | None = None
) -> Registry:
    """Read the registry file (None: base only). All problems are reported at once.

    The base model is `base_model` (ADVISOR_BASE_MODEL) when given, else the registry's own
    (top-level `base_model`; in the seed's shape, the base entry's `id`), else
    DEFAULT_BASE_MODEL. A variant entry's `base_model` applies to that variant only.
    """
    if path is None:
        chosen = _BaseModel(base_model, FROM_SETTING) if base_model else _BaseModel()
        return Registry(
            {BASE_VARIANT: chosen.variant()}, location=location, base_model_from=chosen.source
        )
    if not path.is_file():
        raise ConfigError(f"Registry {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Registry {path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Registry {path}: expected a JSON object")
    if "models" in data:
        return _from_seed_config(data, path, base_model, location)
    return _from_registry(data, path, base_model, location)


@dataclass(frozen=True)
class _BaseModel:
    model: str = DEFAULT_BASE_MODEL
    source: str = FROM_DEFAULT

    def variant(self) -> Variant:
        return Variant(BASE_VARIANT, self.model, description="the base model")


def _choose_base(setting: str | None, from_registry: object, path: Path) -> _BaseModel:
    """ADVISOR_BASE_MODEL wins; else the registry's base model; else the default."""
    if setting:
        return _BaseModel(setting, FROM_SETTING)
    if isinstance(from_registry, str) and from_registry:
        return _BaseModel(_model_ref(from_registry, path.parent), FROM_REGISTRY)
    return _BaseModel()


def _model_ref(value: str, directory: Path) -> str:
    """A model id as is; a path (./, ../, ~ or /) made absolute, relative to the registry."""
    if value.startswith(("./", "../", "~", "/")):
        return str((directory / Path(value).expanduser()).resolve())
    return value


def _from_registry(
    data: dict[str, Any], path: Path, setting: str | None, location: RegistryLocation | None
) -> Registry:
    problems: list[str] = []
    top_base = data.get("base_model")
    if "base_model" in data and not (isinstance(top_base, str) and top_base):
        problems.append("'base_model' must be a non-empty string (a model id or directory)")
    chosen = _choose_base(setting, top_base, path)
    base = chosen.variant()
    variants = {BASE_VARIANT: base}
    unknown_top = set(data) - _TOP_FIELDS
    if unknown_top:
        problems.append(
            f"unknown top-level field(s) {sorted(unknown_top)}; expected {sorted(_TOP_FIELDS)}"
        )
    entries = data.get("variants", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"Registry {path}: 'variants' must be an object of name -> entry")
    for name, entry in entries.items():
        where = f"variant {name!r}"
        if not is_valid_variant_name(name):
            problems.append(f"{where}: name must be lowercase letters, digits, _ or -")
            continue
        if name == BASE_VARIANT:
            problems.append(
                f"{where}: 'base' is implicit (top-level 'base_model' or ADVISOR_BASE_MODEL); "
                "remove it"
            )
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
        elif "base_model" in entry:
            base_model = _model_ref(base_model, path.parent)
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
    return Registry(variants, source=path, location=location, base_model_from=chosen.source)


def _from_seed_config(
    data: dict[str, Any], path: Path, setting: str | None, location: RegistryLocation | None
) -> Registry:
    """The seed's config/model_config.json: models {name: {id | lora_path, description}}.

    The entry without a lora_path is the base model: its `id`, if any, is the registry's
    base model (ADVISOR_BASE_MODEL, when set, wins, as for the registry's own shape).
    Relative lora_paths resolve against this file's directory, like adapter paths.
    `active_model` is validated (it must name one of `models`) but not applied: the
    rollout split in the database decides what serves, so a non-base value is logged with
    the command that does what it meant (`advisor rollout set`).
    """
    problems: list[str] = []
    models = data.get("models")
    if not isinstance(models, dict):
        raise ConfigError(f"Registry {path}: 'models' must be an object")
    base_names: list[str] = []
    seed_id: object = None
    for name, entry in models.items():
        if not isinstance(entry, dict):
            problems.append(f"model {name!r}: expected an object")
        elif entry.get("lora_path") in (None, ""):
            base_names.append(name)
            seed_id = entry.get("id", seed_id)
            if "id" in entry and not (isinstance(seed_id, str) and seed_id):
                problems.append(f"model {name!r}: 'id' must be a non-empty string")
    if len(base_names) > 1:
        problems.append(f"models {base_names}: more than one base entry (no lora_path)")
    chosen = _choose_base(setting, seed_id, path)
    base_model = chosen.model
    variants = {BASE_VARIANT: chosen.variant()}
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
    if active != BASE_VARIANT:
        logger.warning(
            "Registry %s: active_model %r is not applied; the rollout split decides what "
            "serves (advisor rollout set ADVISOR base=0 %s=1 --reason ...)",
            path,
            active,
            active,
        )
    return Registry(variants, source=path, location=location, base_model_from=chosen.source)
