"""Several adapters of one base combined with PEFT's add_weighted_adapter: each method, into a
new adapter or merged weights, the card's record of it, and bad combinations refused."""

from __future__ import annotations

import pytest
import torch

from loradock.errors import ConfigError
from loradock.registry.card import build_adapter_card
from loradock.training.merge import merge
from loradock.training.merge_config import MergeConfig

QUICK = {"probe_rows": 3, "max_new_tokens": 6}
BATCH = {"input_ids": torch.tensor([[1, 5, 9, 20, 33, 7, 11]])}


@pytest.fixture
def publish(registry, tiny_registry_base, tiny_adapter_factory):
    """``publish(repo, task, seed=, r=, base=)`` -> the published adapter's name."""

    def publish(repo, task, *, seed, r=4, base=tiny_registry_base):
        folder = tiny_adapter_factory(seed=seed, r=r)
        card = build_adapter_card(base_model=base, task=task)
        return registry.publish(folder, repo, card=card).repo_id

    return publish


@pytest.fixture
def pair(publish) -> tuple[str, str]:
    return publish("acme/dates", "dates", seed=11), publish(
        "acme/extraction", "extraction", seed=12
    )


def logits(registry, adapter_name: str | None = None, merged: str | None = None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = registry.resolve_base(merged or "local/tiny-base").path
    model = AutoModelForCausalLM.from_pretrained(path)
    if adapter_name:
        model = PeftModel.from_pretrained(model, registry.resolve(adapter_name).path)
    with torch.no_grad():
        return model(**BATCH).logits


@pytest.mark.parametrize(
    ("method", "density", "rank"),
    [
        ("linear", None, 4),
        ("cat", None, 8),
        ("svd", None, 4),
        ("ties", 0.7, 4),
        ("dare_linear", 0.7, 4),
        ("dare_ties", None, 4),
    ],
)
def test_each_method_publishes_a_combined_adapter(registry, pair, method, density, rank):
    config = MergeConfig(
        sources=pair, weights=(0.6, 0.4), method=method, density=density, into="adapter"
    )
    published = merge(config, registry=registry)
    assert published.kind == "adapter" and published.repo_id == f"acme/dates-{method}-adapter"
    assert published.artifact.rank == rank
    card = published.card
    assert card.base_model == "local/tiny-base" and card.task == "dates"
    assert "task:extraction" in card.tags and "merge_check" not in card.training
    record = card.training["merge"]
    shas = [registry.resolve(n).sha for n in pair]
    assert [(s["repo_id"], s["revision"], s["weight"]) for s in record["sources"]] == [
        ("acme/dates", shas[0], 0.6),
        ("acme/extraction", shas[1], 0.4),
    ]
    assert record["method"] == method and record["weights"] == [0.6, 0.4]
    assert record.get("density") == config.density_used and ("seed" in record) == (
        method.startswith("dare")
    )
    combined = logits(registry, published.repo_id)
    for source in pair:
        assert not torch.allclose(combined, logits(registry, source), atol=1e-4)


@pytest.mark.parametrize("method", ["linear", "cat", "svd"])
def test_a_zero_weight_drops_that_adapter(registry, pair, method):
    """Weights (1, 0): the combination is the first adapter alone."""
    config = MergeConfig(sources=pair, weights=(1, 0), method=method, into="adapter")
    published = merge(config, registry=registry)
    want = logits(registry, pair[0])
    assert torch.allclose(logits(registry, published.repo_id), want, atol=1e-4)


def test_several_adapters_into_merged_weights(registry, pair):
    config = MergeConfig(sources=pair, weights=(0.6, 0.4), method="ties", **QUICK)
    published = merge(config, registry=registry)
    assert published.kind == "merge" and published.repo_id == "acme/dates-ties-merge"
    card = published.card
    check = card.training["merge_check"]
    assert check["probe"] == "dates test[:3], extraction test[:3]" and check["prompts"] == 6
    assert check["token_agreement"] == 1.0 and check["dtype"] == "float32"
    assert card.training["merge"]["density"] == 0.5 and "vllm" in card.tags
    assert card.eval_results == (), "a combination is a new model: no scores carried over"
    assert "ties, weights 0.6, 0.4, density 0.5" in card.body


def test_bad_combinations_are_refused_before_weights_load(registry, publish, monkeypatch):
    import loradock.training.merge as merge_module

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(merge_module, "combine_adapters", no_weights)
    monkeypatch.setattr(merge_module, "merge_folder", no_weights)
    names = (
        publish("acme/dates", "dates", seed=11),
        publish("acme/wide", "dates", seed=13, r=8),
        publish("acme/elsewhere", "dates", seed=14, base="acme/other-base"),
    )
    with pytest.raises(ConfigError) as caught:
        merge(MergeConfig(sources=names, method="dare_ties"), registry=registry)
    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert "different bases" in problems[0] and "acme/elsewhere@" in problems[0]
    assert "needs adapters of one rank" in problems[1] and "r=8" in problems[1]
