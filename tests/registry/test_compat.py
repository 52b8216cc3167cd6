"""check_compatibility: one IncompatibleAdapterError naming every problem at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loradock.errors import IncompatibleAdapterError
from loradock.registry.api import ResolvedModel
from loradock.registry.card import build_base_card
from loradock.registry.compat import base_modules, check_compatibility


def _config(tiny_base: Path, **changes) -> dict:
    config = json.loads((tiny_base / "config.json").read_text())
    config.update(changes)
    return config


def _problems(adapter, base, **kw) -> list[str]:
    with pytest.raises(IncompatibleAdapterError) as info:
        check_compatibility(adapter, base, **kw)
    return info.value.problems


def test_a_matching_adapter_passes(adapter_dir, tiny_base):
    check_compatibility(adapter_dir, tiny_base)
    check_compatibility(adapter_dir, _config(tiny_base), max_rank=4)


def test_accepts_a_transformers_config(adapter_dir, tiny_base):
    from transformers import AutoConfig

    check_compatibility(adapter_dir, AutoConfig.from_pretrained(tiny_base))


def test_module_tree_is_built_once_per_config(tiny_base):
    a = base_modules(_config(tiny_base))
    b = base_modules(_config(tiny_base))
    assert a is b
    assert a.modules["model.layers.0.self_attn.q_proj"] == (64, 64)
    assert a.num_layers == 2 and a.hidden_size == 64


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"hidden_size": 32, "intermediate_size": 64}, "hidden_size=32"),
        ({"num_hidden_layers": 1}, "has 1 layers"),
        (
            {
                "model_type": "gpt2",
                "architectures": ["GPT2LMHeadModel"],
                "n_embd": 64,
                "n_layer": 2,
            },
            "architecture mismatch",
        ),
    ],
    ids=["hidden-size", "layer-count", "architecture"],
)
def test_base_mismatch(adapter_dir, tiny_base, changes, expected):
    problems = _problems(adapter_dir, _config(tiny_base, **changes))
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_together(broken_adapter, tiny_base):
    folder = broken_adapter("modules-to-save")
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(peft_type="LOHA", target_modules=["q_proj", "v_proj", "qkv_fused"])
    (folder / "adapter_config.json").write_text(json.dumps(config))
    problems = _problems(folder, _config(tiny_base, hidden_size=32), max_rank=2)
    text = "\n".join(problems)
    assert "'LOHA'" in text
    assert "rank 4 is over the limit of 2" in text
    assert "modules_to_save=['lm_head']" in text
    assert "['qkv_fused']" in text
    assert "hidden_size=32" in text
    assert len(problems) == 5


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ia3", "'IA3' is not supported"),
        ("modules-to-save", "modules_to_save=['lm_head']"),
        ("unknown-target", "['qkv_fused'] do not exist"),
        ("pickle-only", "pickle file"),
        ("truncated", "truncated"),
        ("no-config", "No adapter_config.json"),
    ],
)
def test_adapter_problems(broken_adapter, tiny_base, kind, expected):
    problems = _problems(broken_adapter(kind), tiny_base)
    assert any(expected in p for p in problems), problems


def test_pickle_can_be_allowed(broken_adapter, tiny_base):
    check_compatibility(broken_adapter("pickle-only"), tiny_base, allow_pickle=True)


def test_rank_limit(adapter_dir, tiny_base):
    check_compatibility(adapter_dir, tiny_base, max_rank=4)
    (problem,) = _problems(adapter_dir, tiny_base, max_rank=3)
    assert "rank 4 is over the limit of 3" in problem


def test_base_name_must_agree_when_both_known(tmp_path, adapter_dir, tiny_base):
    import shutil

    folder = tmp_path / "named"
    shutil.copytree(adapter_dir, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "acme/other-base"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    resolved = ResolvedModel("acme/tiny-base", "0" * 40, tiny_base, None)
    (problem,) = _problems(folder, resolved)
    assert "'acme/other-base'" in problem and "'acme/tiny-base'" in problem
    check_compatibility(folder, tiny_base)  # a bare folder has no id to compare
    # A quantized copy of the model the adapter names takes its adapters.
    card = build_base_card(base_model="acme/other-base", relation="quantized")
    check_compatibility(folder, ResolvedModel("acme/tiny-base-q", "0" * 40, tiny_base, card))


def test_embedding_weights_in_the_adapter(tmp_path, adapter_dir, tiny_base):
    """A resized vocabulary shows up as full embedding tensors next to the LoRA matrices."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "emb"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((adapter_dir / "adapter_config.json").read_bytes())
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    tensors["base_model.model.model.embed_tokens.weight"] = np.zeros((400, 64), np.float32)
    save_file(tensors, folder / "adapter_model.safetensors")
    (problem,) = _problems(folder, tiny_base)
    assert "embed_tokens" in problem and "resized embeddings" in problem


def test_base_without_config(adapter_dir, tmp_path):
    (problem,) = _problems(adapter_dir, tmp_path)
    assert "has no config.json" in problem and str(tmp_path) in problem


def test_weights_without_lora_matrices(tmp_path, adapter_dir, tiny_base):
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((adapter_dir / "adapter_config.json").read_bytes())
    save_file(
        {"something.weight": np.zeros((2, 2), np.float32)}, folder / "adapter_model.safetensors"
    )
    problems = _problems(folder, tiny_base)
    assert any("holds no LoRA matrices" in p for p in problems), problems


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"(.|.)*\d\d", "took over 0.5 s to match the base's module names (catastrophic"),
        ("x" * 600, "is 600 characters long, over the limit of 512"),
        ("q_proj(", "is not a valid regular expression"),
        (r".*\.qkv_fused", "matches no module of the base"),
        (r"model\.layers\.\d+\.self_attn\.(q|v)_proj", None),
    ],
    ids=["backtracking", "too-long", "invalid", "matches-nothing", "ordinary"],
)
def test_target_modules_pattern(tmp_path, adapter_dir, tiny_base, pattern, expected):
    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": pattern}))
    if expected is None:
        check_compatibility(adapter, tiny_base)
        return
    assert any(expected in p for p in _problems(adapter, tiny_base)), expected
