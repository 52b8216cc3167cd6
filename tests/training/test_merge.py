"""Merging one adapter: the merged model answers as the unmerged adapter does, in float32 and
16-bit, large adapter weights included, and is published as a merge with the check's figures."""

from __future__ import annotations

import json

import pytest
import torch

from loradock.errors import AdapterNotFoundError, ArtifactError
from loradock.registry.card import build_adapter_card
from loradock.training.merge import merge, merge_folder
from loradock.training.merge_check import (
    PROBE_PROMPTS,
    THRESHOLDS,
    MergeCheck,
    compare_models,
    probe_prompts,
)
from loradock.training.merge_config import MergeConfig

QUICK = {"probe_rows": 4, "max_new_tokens": 8}
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture
def published_adapter(registry, tiny_registry_base, tiny_adapter_factory) -> str:
    folder = tiny_adapter_factory(seed=3, r=4, target_modules=("q_proj", "v_proj", "down_proj"))
    card = build_adapter_card(base_model=tiny_registry_base, task="dates")
    return registry.publish(folder, "acme/tiny-merge-me", card=card).repo_id


def scaled_adapter(src, dst, scale: float):
    """``src`` with its B matrices times ``scale``: the weights a long, hot training run
    leaves, which moved a bf16 merge's largest logit by 1.9 and failed the old logit check."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "adapter_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v * scale if "lora_B" in k else v for k, v in tensors.items()}, weights)
    return dst


def test_merge_publishes_a_model_that_matches_the_adapter(registry, published_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    published = merge(MergeConfig(sources=(published_adapter,), **QUICK), registry=registry)
    assert published.repo_id == "acme/tiny-merge-me-merged" and published.kind == "merge"
    training = published.card.training
    check = training["merge_check"]
    assert check["dtype"] == "float32" and check["probe"] == "dates test[:4]"
    assert check["token_agreement"] == 1.0 and check["decided_agreement"] == 1.0
    assert check["mean_kl"] < 1e-6 and check["prompts"] == 4 and 4 <= check["tokens"] <= 4 * 8
    adapter = registry.resolve(published_adapter)
    assert training["merge"]["sources"] == [
        {"repo_id": "acme/tiny-merge-me", "revision": adapter.sha, "task": "dates", "weight": 1.0}
    ]

    merged = registry.resolve_base(published.repo_id)
    text = (merged.path / "README.md").read_text()
    assert "base_model_relation: merge" in text and "base_model: local/tiny-base" in text
    assert "greedy tokens agree on 100.00%" in text
    assert not list(merged.path.glob("adapter_*")), "a merged model carries no adapter files"
    assert "quantization_config" not in json.loads((merged.path / "config.json").read_text())

    # Independently: merged weights reproduce base + adapter.
    base = registry.resolve_base("local/tiny-base")
    batch = {"input_ids": torch.tensor([[1, 5, 9, 20, 33, 7]])}
    with torch.no_grad():
        want = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base.path), adapter.path
        )(**batch).logits
        got = AutoModelForCausalLM.from_pretrained(merged.path)(**batch).logits
        plain = AutoModelForCausalLM.from_pretrained(base.path)(**batch).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert not torch.allclose(plain, got, atol=1e-3), "the adapter must change the outputs"


@pytest.mark.parametrize(
    ("base_dtype", "dtype", "scale", "written"),
    [
        ("bfloat16", "auto", 1.0, "bfloat16"),
        # The case that failed: a bf16 base and an adapter trained to large weights.
        ("bfloat16", "auto", 30.0, "bfloat16"),
        ("float32", "bfloat16", 30.0, "bfloat16"),
        ("float32", "float16", 30.0, "float16"),
        ("bfloat16", "float32", 30.0, "float32"),
    ],
    ids=["bf16", "bf16-large-weights", "to-bf16", "to-fp16", "bf16-to-fp32"],
)
def test_merge_writes_the_dtype_and_answers_as_the_adapter(
    tmp_path, tiny_adapter_factory, base_dtype, dtype, scale, written
):
    from loradock.tiny import make_tiny_base

    base = make_tiny_base(tmp_path / "base", dtype=base_dtype)
    source = tiny_adapter_factory(seed=5, r=8, target_modules=ALL_MODULES)
    adapter = scaled_adapter(source, tmp_path / "adapter", scale)
    check = merge_folder(adapter, base, tmp_path / "out", dtype=dtype, tasks=("dates",), **QUICK)
    low, high, _ = THRESHOLDS[written]
    # On a tiny random model most positions are near-ties, so the KL carries this check.
    assert check.dtype == written and check.ok and check.tokens >= 4
    assert check.decided_agreement >= low and check.mean_kl <= high
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == written


def test_a_merge_that_answers_differently_is_not_written(tmp_path, tiny_base, monkeypatch):
    """The check refuses: here a threshold no merge can meet stands in for a broken merge."""
    from loradock.tiny import make_tiny_adapter

    adapter = make_tiny_adapter(tiny_base, tmp_path / "adapter", seed=9)
    monkeypatch.setitem(THRESHOLDS, "float32", (1.01, 0.0, 0.0))
    with pytest.raises(ArtifactError, match="does not answer as the unmerged adapter"):
        merge_folder(adapter, tiny_base, tmp_path / "out", **QUICK)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_the_check_refuses_a_merge_that_lost_the_adapter(
    tmp_path, tiny_base, tiny_adapter_factory, scale
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loradock.modeling import load_tokenizer

    adapter = scaled_adapter(tiny_adapter_factory(seed=5), tmp_path / "adapter", scale)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), adapter)
    lost = AutoModelForCausalLM.from_pretrained(tiny_base)
    prompts, probe = probe_prompts(("dates",), 4)
    check = compare_models(
        reference,
        lost,
        load_tokenizer(tiny_base),
        prompts,
        dtype="float32",
        probe=probe,
        max_new_tokens=8,
    )
    assert not check.ok and check.mean_kl > THRESHOLDS["float32"][1]


@pytest.mark.parametrize(
    ("decided_tokens", "decided_agreement", "mean_kl", "ok"),
    [
        (100, 0.99, 0.001, True),
        (100, 0.97, 0.001, False),  # flips where the adapter was sure
        (100, 1.0, 0.03, False),  # same choices, distributions too far apart
        (0, 1.0, 0.001, True),  # all near-ties (a tiny random model): the KL decides
    ],
)
def test_what_the_check_requires(decided_tokens, decided_agreement, mean_kl, ok):
    check = MergeCheck(
        dtype="bfloat16",
        compute_dtype="float32",
        probe="p",
        prompts=4,
        tokens=100,
        token_agreement=0.9,
        mean_kl=mean_kl,
        max_kl=mean_kl,
        answer_agreement=0.5,
        decided_tokens=decided_tokens,
        decided_agreement=decided_agreement,
        min_token_agreement=0.98,
        max_mean_kl=0.02,
        tie_nats=0.5,
    )
    assert check.ok is ok


@pytest.mark.parametrize(
    ("tasks", "count", "probe"),
    [
        (("dates",), 3, "dates test[:3]"),
        (("dates", "extraction", "dates"), 6, "dates test[:3], extraction test[:3]"),
        ((None, "unknown-task"), len(PROBE_PROMPTS), "shipped probe set"),
    ],
)
def test_probe_prompts_come_from_the_sources_tasks(tasks, count, probe):
    prompts, where = probe_prompts(tasks, 3)
    assert len(prompts) == count and where == probe


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("acme/not-there", AdapterNotFoundError, "acme/not-there"),
        ("acme/tiny-merge-me@deadbeef", LookupError, "deadbeef"),
    ],
)
def test_merge_of_unknown_adapters(registry, published_adapter, name, error, match):
    with pytest.raises(error, match=match):
        merge(MergeConfig(sources=(name,)), registry=registry)


def test_merge_refuses_a_quantized_base(tmp_path, tiny_base, tiny_adapter_factory):
    import shutil

    quantized = tmp_path / "q"
    shutil.copytree(tiny_base, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="quantized"):
        merge_folder(tiny_adapter_factory(seed=5), quantized, tmp_path / "out")
