"""Batched multi-LoRA gives PEFT's answer for every row of a mixed batch."""

from __future__ import annotations

import pytest
import torch

from loradock.errors import IncompatibleAdapterError
from loradock.serving.engines.peft.multi_lora import MultiLora


def _load(path):
    from peft import LoraConfig
    from safetensors.torch import load_file

    return LoraConfig.from_pretrained(str(path)), load_file(str(path / "adapter_model.safetensors"))


def _peft_logits(base, adapter, ids):
    """The reference: float32 transformers logits, through PEFT when ``adapter`` is given."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "matmuls"])
def test_mixed_batch_matches_peft(tiny_base, tiny_adapter_factory, fused):
    from transformers import AutoModelForCausalLM

    a = tiny_adapter_factory(seed=1)
    b = tiny_adapter_factory(seed=3, r=8, target_modules=("q_proj", "k_proj", "o_proj"))
    ids = torch.tensor([[5, 9, 30, 7], [11, 3, 8, 2], [4, 4, 60, 1], [5, 9, 30, 7]])

    def reference(adapter):
        return _peft_logits(tiny_base, adapter, ids)

    expected = [reference(a)[0], reference(b)[1], reference(None)[2], reference(a)[3]]
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    if fused:
        pytest.importorskip("numba")
    lora = MultiLora(model, n_slots=2, fused=fused)
    assert lora.fused is fused  # float32 on the CPU: decode steps run the fused kernel
    calls = []
    if fused:
        kernel = lora.ctx.fused
        lora.ctx.fused = lambda *args: calls.append(1) or kernel(*args)
    lora.attach(1, lora.parse("a", *_load(a)))
    lora.attach(2, lora.parse("b", *_load(b)))  # larger rank: slot 1 zero-padded, same results
    lora.set_rows([1, 2, 0, 1])
    with torch.no_grad():
        got = model(input_ids=ids).logits
    for row, want in enumerate(expected):
        torch.testing.assert_close(got[row], want, rtol=1e-4, atol=1e-4)
    assert all(layer.dense for layer in lora.layers.values())
    # One token a row (a decode step) takes the dense path; causal, so its logits are the
    # first position's of the prompt above (which gathered per row).
    with torch.no_grad():
        one = model(input_ids=ids[:, :1]).logits[:, 0]
    torch.testing.assert_close(one, got[:, 0], rtol=1e-4, atol=1e-4)
    assert bool(calls) is fused  # prefill and decode ran the kernel (fused) or matmuls
    for layer in lora.layers.values():
        layer.dense = False  # the gather + bmm path (many slots) gives the same answer
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids[:, :1]).logits[:, 0], one)
    lora.set_rows([2, 2, 2, 2])  # the one-adapter path (no gather) agrees too
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits[1], expected[1], rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(  # and so does its decode step
            model(input_ids=ids[:, :1]).logits[1, 0], expected[1][0], rtol=1e-4, atol=1e-4
        )
    lora.detach(2)
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits[2], expected[2], rtol=1e-4, atol=1e-4
        )


def test_bf16_model_runs_the_fused_kernel(tiny_base, tiny_adapter_factory):
    """A bf16 model on a CPU: LoRA sums run in the float32 kernel (its stacks are float32) and
    land on the bf16 base output, within bf16's rounding of the float32 answer."""
    pytest.importorskip("numba")
    from transformers import AutoModelForCausalLM

    a = tiny_adapter_factory(seed=1)
    b = tiny_adapter_factory(seed=3, r=8)
    ids = torch.tensor([[5, 9, 30, 7], [11, 3, 8, 2], [4, 4, 60, 1]])

    expected = torch.stack(
        [_peft_logits(tiny_base, a, ids)[0], _peft_logits(tiny_base, b, ids)[1],
         _peft_logits(tiny_base, None, ids)[2]]
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16).eval()
    lora = MultiLora(model, n_slots=2)
    assert lora.fused
    calls = []
    kernel = lora.ctx.fused
    lora.ctx.fused = lambda *args: calls.append(1) or kernel(*args)
    lora.attach(1, lora.parse("a", *_load(a)))
    lora.attach(2, lora.parse("b", *_load(b)))
    assert all(layer.A.dtype == torch.float32 for layer in lora.layers.values())
    lora.set_rows([1, 2, 0])
    with torch.no_grad():
        got = model(input_ids=ids).logits
    assert calls and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)
    # The adapters matter at this tolerance: without them the answer is measurably different.
    lora.set_rows([0, 0, 0])
    with torch.no_grad():
        plain = model(input_ids=ids).logits.float()
    assert (plain[:2] - expected[:2]).abs().max() > 0.2


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        (
            "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
            "not a LoRA A/B",
        ),
        ("base_model.model.model.layers.0.self_attn.nope.lora_A.weight", "not in the base model"),
        ("base_model.model.lm_head.weight", "not a LoRA A/B"),
    ],
)
def test_unsupported_tensors_are_refused(tiny_base, tiny_adapter_factory, key, fragment):
    from transformers import AutoModelForCausalLM

    config, tensors = _load(tiny_adapter_factory(seed=1))
    tensors[key] = torch.zeros(4, 64)
    lora = MultiLora(AutoModelForCausalLM.from_pretrained(tiny_base), n_slots=1)
    with pytest.raises(IncompatibleAdapterError) as info:
        lora.parse("acme/x", config, tensors)
    assert any(fragment in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("rows", "d", "o", "r"),
    [
        ([1, 2, 0, 1], 64, 32, 4),  # mixed, with a base row (slot 0 adds nothing)
        ([3, 3, 3], 16, 48, 8),  # one adapter (the single-adapter case)
        ([0, 0], 8, 8, 2),  # base only
        ([2, 1, 3, 0, 2, 1, 3, 0], 100, 7, 3),  # sizes no vector width divides
    ],
)
def test_fused_kernel_matches_matmuls(rows, d, o, r):
    pytest.importorskip("numba")
    import numpy as np

    from loradock.serving.engines.peft.lora_kernel import kernel

    gen = torch.Generator().manual_seed(0)
    slots = 4
    x = torch.randn(len(rows), d, generator=gen)
    a = torch.randn(slots, r, d, generator=gen)
    bt = torch.randn(slots, r, o, generator=gen)
    y = torch.randn(len(rows), o, generator=gen)
    want = y.clone()
    for i, s in enumerate(rows):
        if s:
            want[i] += (x[i] @ a[s].T) @ bt[s]
    kernel()(x.numpy(), a.numpy(), bt.numpy(), np.asarray(rows, dtype=np.int64), y.numpy())
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


def _refusal(tiny_base, adapter, change, max_rank=64) -> list[str]:
    """The problems ``parse`` lists for ``adapter`` after ``change(config, tensors)``."""
    from transformers import AutoModelForCausalLM

    config, tensors = _load(adapter)
    change(config, tensors)
    lora = MultiLora(AutoModelForCausalLM.from_pretrained(tiny_base), n_slots=1, max_rank=max_rank)
    try:
        lora.parse("acme/x", config, tensors)
    except IncompatibleAdapterError as exc:
        return exc.problems
    return []


def _set(attr, value):
    return lambda config, tensors: setattr(config, attr, value)


def _poison(value):
    def change(config, tensors):
        key = next(k for k in tensors if k.endswith("lora_A.weight"))
        tensors[key][0, 0] = value

    return change


@pytest.mark.parametrize(
    ("change", "max_rank", "fragment"),
    [
        (lambda c, t: None, 2, "rank 4 is over this engine's limit of 2"),
        (_poison(float("nan")), 64, "hold NaN or inf"),
        (_poison(float("inf")), 64, "hold NaN or inf"),
        (_set("lora_alpha", 1e40), 64, "hold NaN or inf"),  # finite, but B * scale overflows
        (_set("lora_alpha", "8"), 64, "lora_alpha '8' is not a finite number"),
        (_set("target_modules", r"(.|.)*\d\d"), 64, "catastrophic backtracking"),
        (_set("target_modules", "x" * 600), 64, "600 characters long"),
        (_set("target_modules", "(?:a{100000}){100000}"), 64, "multiply to 10000000000"),
        (_set("target_modules", ".*q_proj{e<=1}"), 64, "has a '{' that is not a count"),
        (_set("target_modules", r".*\.k_proj"), 64, "target_modules='.*\\\\.k_proj' does not"),
        (_set("target_modules", {"k_proj"}), 64, "does not select it"),
        (_set("exclude_modules", "model.layers.0.*"), 64, "does not select it"),
        (_set("alpha_pattern", {"q_proj(": 4}), 64, "not a valid regular expression"),
        (_set("alpha_pattern", {r"(.|.)*\d\d": 4}), 64, "catastrophic backtracking"),
    ],
    ids=["rank-over-cap", "nan", "inf", "overflowing-scale", "alpha-not-a-number",
         "backtracking-targets", "long-pattern", "compile-bomb", "fuzzy", "targets-miss",
         "list-misses", "excluded",
         "invalid-alpha-pattern", "backtracking-alpha-pattern"],
)  # fmt: skip
def test_hostile_adapters_are_refused(tiny_base, tiny_adapter_factory, change, max_rank, fragment):
    problems = _refusal(tiny_base, tiny_adapter_factory(seed=1), change, max_rank)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize(
    ("change", "scales"),
    [
        (lambda c, t: None, {"q_proj": 2.0, "v_proj": 2.0}),
        (_set("target_modules", r"model\.layers\.\d+\.self_attn\.(q|v)_proj"), {"q_proj": 2.0}),
        (_set("target_modules", "all-linear"), {"q_proj": 2.0}),
        (_set("alpha_pattern", {r"layers\.\d\.self_attn\.v_proj": 12}), {"v_proj": 3.0}),
        (_set("rank_pattern", {"q_proj": 4}), {"q_proj": 2.0}),
    ],
    ids=["list", "full-match-string", "all-linear", "alpha-pattern", "rank-pattern"],
)
def test_peft_patterns_keep_their_meaning(tiny_base, tiny_adapter_factory, change, scales):
    """PEFT's semantics for ordinary patterns: a string target_modules is a full match, a list
    matches name suffixes, an alpha_pattern key the end of a name (alpha 8, rank 4 here)."""
    from transformers import AutoModelForCausalLM

    config, tensors = _load(tiny_adapter_factory(seed=1))
    change(config, tensors)
    lora = MultiLora(AutoModelForCausalLM.from_pretrained(tiny_base), n_slots=1)
    weights = lora.parse("acme/x", config, tensors)
    assert len(weights) == 4  # q_proj and v_proj of both layers
    for module, (_, _, scale) in weights.items():
        suffix = module.rsplit(".", 1)[-1]
        assert scale == scales.get(suffix, 2.0), module


def test_overflow_in_one_slot_stays_in_its_rows(tiny_base, tiny_adapter_factory):
    """The dense decode path computes every slot's A for every row: a slot whose LoRA
    overflows (inf) must not turn the other rows' outputs into NaN (inf * 0)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    lora = MultiLora(model, n_slots=2, fused=False)
    lora.attach(1, lora.parse("a", *_load(tiny_adapter_factory(seed=1))))
    lora.attach(2, lora.parse("b", *_load(tiny_adapter_factory(seed=3))))
    ids = torch.tensor([[5], [11], [4]])
    lora.set_rows([1, 0, 1])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        for layer in lora.layers.values():
            layer.A[2].fill_(3e38)  # x @ A overflows for every row's slot-2 block
        lora.set_rows([1, 0, 2])
        got = model(input_ids=ids).logits
    assert all(layer.dense for layer in lora.layers.values())
    torch.testing.assert_close(got[:2], want[:2])
    assert not torch.isfinite(got[2]).all()
