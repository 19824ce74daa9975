"""LoRA adapters refused: missing files, wrong keys, another base's shapes, damaged tensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")

from safetensors.numpy import save_file  # noqa: E402

from advisor_worker import generation, lora  # noqa: E402
from advisor_worker.devtools.adapter_maker import write_random_adapter  # noqa: E402
from advisor_worker.errors import AdapterInvalid  # noqa: E402
from tests.advisor_worker.lora_probes import (  # noqa: E402
    refusal,
    rewrite_tensors,
)


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("adapter_config.json", "adapter_config.json is missing"),
        ("adapter_model.safetensors", "no weights file; expected adapters.safetensors"),
        ("*", "does not exist"),
    ],
)
def test_missing_files_are_refused_by_name(
    remove: str, expected: str, fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="peft")
    if remove == "*":
        shutil.rmtree(adapter)
    else:
        (adapter / remove).unlink()
    assert expected in refusal(fresh, adapter, tiny_model_dir)


def test_wrong_key_names_are_refused_naming_the_key_and_the_nearest_module(
    fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="mlx")
    rewrite_tensors(
        adapter / "adapters.safetensors",
        lambda t: {k.replace("self_attn.q_proj", "attn.q_proj"): v for k, v in t.items()},
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_parameters"]["keys"] = ["attn.q_proj", "self_attn.v_proj"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    message = refusal(fresh, adapter, tiny_model_dir)
    assert "language_model.model.layers.0.attn.q_proj.lora_a: no module" in message
    assert "nearest: 'language_model.model.layers.0.self_attn.q_proj'" in message


def test_peft_keys_without_the_peft_prefix_are_refused(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="peft")
    rewrite_tensors(
        adapter / "adapter_model.safetensors",
        lambda t: {k.removeprefix("base_model.model."): v for k, v in t.items()},
    )
    assert "not a PEFT key (expected the prefix 'base_model.model.')" in refusal(
        fresh, adapter, tiny_model_dir
    )


def test_an_adapter_for_another_base_is_refused_naming_the_key_and_both_shapes(
    fresh: Any, base_logits: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-model"
    other.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["text_config"]["hidden_size"] = 96  # another tiny model: same layout, wider
    (other / "config.json").write_text(json.dumps(config))
    adapter = write_random_adapter(other, tmp_path / "a", fmt="peft")
    model, processor = fresh()
    with pytest.raises(AdapterInvalid) as info:
        lora.verify_and_apply(model, processor, adapter, base_model=str(tiny_model_dir))
    message = str(info.value)
    assert (
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight / "
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight: "
        "shapes (4, 96) / (64, 4) do not fit language_model.model.layers.0.self_attn.q_proj "
        "(in 64, out 64), which needs (4, 64) / (64, 4)"
    ) in message
    assert bool(mx.array_equal(generation.probe_logits(model, processor), base_logits))


def test_a_rank_that_disagrees_with_the_config_is_refused(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="peft", rank=4)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["r"] = 8
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    message = refusal(fresh, adapter, tiny_model_dir)
    assert "layers.0.self_attn.q_proj.lora_A.weight has rank 4 and" in message
    assert "adapter_config.json says 8" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_safetensors_file_is_refused(
    damage: str, fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="mlx")
    weights = adapter / "adapters.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100] if damage == "truncate" else b"\x00not safetensors" * 4)
    message = refusal(fresh, adapter, tiny_model_dir)
    assert f"{weights}: not a readable safetensors file" in message


def test_an_empty_adapter_is_refused(fresh: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="peft")
    save_file({}, str(adapter / "adapter_model.safetensors"))
    assert "holds no tensors (an empty adapter)" in refusal(fresh, adapter, tiny_model_dir)


def test_a_lone_a_matrix_and_a_module_missing_from_the_config_keys_are_refused(
    fresh: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = write_random_adapter(tiny_model_dir, tmp_path / "a", fmt="mlx")
    drop = "language_model.model.layers.1.self_attn.v_proj.lora_b"
    rewrite_tensors(
        adapter / "adapters.safetensors", lambda t: {k: v for k, v in t.items() if k != drop}
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_parameters"]["keys"].remove("language_model.model.layers.0.self_attn.q_proj")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    message = refusal(fresh, adapter, tiny_model_dir)
    assert "layers.1.self_attn.v_proj.lora_a: its B half is missing" in message
    assert (
        "module 'language_model.model.layers.0.self_attn.q_proj' is not in lora_parameters.keys"
        in message
    )
