"""Merging: the merged model agrees with the unmerged adapter and is published as a merge."""

from __future__ import annotations

import json

import pytest
import torch

from loradock.errors import AdapterNotFoundError, ArtifactError
from loradock.registry.card import build_adapter_card
from loradock.training.merge import merge_adapter, merge_folder, probe_batch


@pytest.fixture
def published_adapter(registry, tiny_registry_base, tiny_adapter_factory) -> str:
    folder = tiny_adapter_factory(seed=3, r=4, target_modules=("q_proj", "v_proj", "down_proj"))
    card = build_adapter_card(base_model=tiny_registry_base, task="dates")
    return registry.publish(folder, "acme/tiny-merge-me", card=card).repo_id


def test_merge_publishes_a_model_that_matches_the_adapter(registry, published_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loradock.modeling import load_tokenizer

    published = merge_adapter(published_adapter, registry=registry)
    assert published.repo_id == "acme/tiny-merge-me-merged" and published.kind == "merge"
    check = published.card.training["merge_check"]
    assert check["dtype"] == "float32" and check["max_abs_logit_diff"] < 1e-3
    assert check["argmax_agreement"] == 1.0

    merged = registry.resolve_base(published.repo_id)
    text = (merged.path / "README.md").read_text()
    assert "base_model_relation: merge" in text and "base_model: local/tiny-base" in text
    assert not list(merged.path.glob("adapter_*")), "a merged model carries no adapter files"
    config = json.loads((merged.path / "config.json").read_text())
    assert "quantization_config" not in config

    # Independently: merged weights reproduce base + adapter.
    base = registry.resolve_base("local/tiny-base")
    adapter = registry.resolve(published_adapter)
    batch = probe_batch(load_tokenizer(base.path))
    with torch.no_grad():
        want = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base.path), adapter.path
        )(**batch).logits
        got = AutoModelForCausalLM.from_pretrained(merged.path)(**batch).logits
        plain = AutoModelForCausalLM.from_pretrained(base.path)(**batch).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert not torch.allclose(plain, got, atol=1e-3), "the adapter must change the outputs"


def test_merge_keeps_the_base_dtype(tmp_path, tiny_adapter_factory):
    from loradock.tiny import make_tiny_base

    base16 = make_tiny_base(tmp_path / "bf16-base", dtype="bfloat16")
    adapter = tiny_adapter_factory(seed=5)
    check = merge_folder(adapter, base16, tmp_path / "out")
    assert check.dtype == "bfloat16" and check.ok
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("acme/not-there", AdapterNotFoundError, "acme/not-there"),
        ("acme/tiny-merge-me@deadbeef", LookupError, "deadbeef"),
    ],
)
def test_merge_of_unknown_adapters(registry, published_adapter, name, error, match):
    with pytest.raises(error, match=match):
        merge_adapter(name, registry=registry)


def test_merge_refuses_a_quantized_base(tmp_path, tiny_base, tiny_adapter_factory):
    import shutil

    quantized = tmp_path / "q"
    shutil.copytree(tiny_base, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="quantized"):
        merge_folder(tiny_adapter_factory(seed=5), quantized, tmp_path / "out")
