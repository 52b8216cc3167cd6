"""``packing: auto`` from the data, and attention that stays within each packed example."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from loradock.training.packing import (
    PADDING_THRESHOLD,
    decide_packing,
    expected_padding_fraction,
    token_lengths,
)

UNIFORM = [103, 104, 102, 103] * 50  # the shipped dates rows: ~1% padding at any batch size
_rng = random.Random(0)
LONG_TAILED = [min(int(_rng.lognormvariate(4.6, 0.7)), 512) for _ in range(200)]


@pytest.mark.parametrize(
    ("lengths", "batch", "expected"),
    [
        ([5, 5, 5, 5], 2, 0.0),
        ([1, 3], 2, 1 / 3),  # padded to 3 + 3 = 6 computed, 4 real
        ([1, 3], 1, 0.0),  # a batch of one is never padded
        ([2, 2, 2, 8], 4, 1 - 14 / 32),
        ([], 4, 0.0),
    ],
)
def test_expected_padding_fraction(lengths, batch, expected):
    assert expected_padding_fraction(lengths, batch) == pytest.approx(expected)


def test_padding_grows_with_batch_size_on_varied_lengths():
    fractions = [expected_padding_fraction(LONG_TAILED, b) for b in (1, 2, 4, 8, 16)]
    assert fractions[0] == 0.0
    assert fractions == sorted(fractions) and fractions[-1] > 0.4


@pytest.mark.parametrize(
    ("setting", "device", "lengths", "expected"),
    [
        ("auto", "cpu", UNIFORM, False),  # nothing to remove: unpacked on a CPU
        ("auto", "cpu", LONG_TAILED, True),  # unpacked batches mostly padding: packed
        ("auto", "cuda", UNIFORM, True),  # an accelerator always packs
        ("auto", "cuda:1", LONG_TAILED, True),
        ("auto", "cpu", None, False),  # no lengths known: the safe CPU default
        (True, "cpu", UNIFORM, True),  # explicit settings win over the data
        (False, "cpu", LONG_TAILED, False),
        (False, "cuda", LONG_TAILED, False),
    ],
)
def test_packing_policy(setting, device, lengths, expected):
    decision = decide_packing(setting, device, lengths, 4)
    assert decision.packing is expected
    if lengths:
        assert 0.0 <= decision.padding_fraction < 1.0
        assert f"{decision.padding_fraction:.0%} padding" in decision.message()
    assert decision.message().startswith(f"packing: {'on' if expected else 'off'}")


def test_threshold_sits_between_the_two_kinds_of_data():
    assert expected_padding_fraction(UNIFORM, 4) < PADDING_THRESHOLD
    assert expected_padding_fraction(LONG_TAILED, 4) > PADDING_THRESHOLD


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size=0"):
        expected_padding_fraction([1, 2], 0)


def test_token_lengths_match_what_trl_tokenizes(make_job, tiny_registry_base, registry, caplog):
    """The policy's lengths are the unpacked rows trl trains on (same template, same cut)."""
    from loradock.training.config import JobConfig
    from loradock.training.preflight import preflight
    from loradock.training.session import build_session

    job = JobConfig.from_dict(make_job(trainer={"packing": False}))
    with caplog.at_level(logging.INFO, logger="loradock.training.packing"):
        session = build_session(preflight(job, registry=registry), progress=False)
    trl_lengths = [len(ids) for ids in session.trainer.train_dataset["input_ids"]]
    rows = session.plan.data.trl_train()
    ours = token_lengths(rows, session.tokenizer, max_length=512)
    assert ours == trl_lengths
    cut = min(ours) + 1  # rows longer than max_length count as cut, as trl cuts them
    assert token_lengths(rows, session.tokenizer, max_length=cut) == [min(n, cut) for n in ours]
    assert "packing: off, unpacked batches would be" in caplog.text
    assert session.packing.setting is False and session.packing.packing is False


def _packed_batch(lengths: list[int], vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (1, sum(lengths)), generator=gen)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    edges = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return {
        "input_ids": ids,
        "position_ids": position_ids,
        "cu_seq_lens_q": edges,
        "cu_seq_lens_k": edges,
        "max_length_q": max(lengths),
        "max_length_k": max(lengths),
    }


def test_packed_attention_equals_each_example_alone(tiny_base):
    """Per-example attention gives the logits and gradients of sdpa's block-diagonal mask."""
    from transformers import AutoModelForCausalLM

    from loradock.training.packed_attention import PACKED, use_training_attention

    lengths = [7, 19, 3, 12]
    reference = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    packed = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    assert reference.config._attn_implementation == "sdpa"
    assert use_training_attention(packed, packed=True, device="cpu") == "sdpa"
    assert packed.config._attn_implementation == PACKED
    batch = _packed_batch(lengths, reference.config.vocab_size)
    labels = batch["input_ids"].clone()
    # use_cache=False, as trl trains: transformers builds the packed mask only without a cache.
    out_ref = reference(**batch, labels=labels, use_cache=False)
    out_packed = packed(**batch, labels=labels, use_cache=False)
    torch.testing.assert_close(out_packed.logits, out_ref.logits, atol=1e-5, rtol=1e-4)
    out_ref.loss.backward()
    out_packed.loss.backward()
    for (name, p_ref), (_, p_packed) in zip(
        reference.named_parameters(), packed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(p_packed.grad, p_ref.grad, atol=1e-5, rtol=1e-4, msg=name)
    # And each example alone, unpacked, gives the same logits: nothing leaks across examples.
    start = 0
    for n in lengths:
        alone = reference(input_ids=batch["input_ids"][:, start : start + n]).logits
        torch.testing.assert_close(
            out_packed.logits[:, start : start + n], alone, atol=1e-5, rtol=1e-4
        )
        start += n


def test_packed_attention_hands_other_calls_to_sdpa(tiny_base):
    """Padded batches and generation still work (and match sdpa) after the switch."""
    from transformers import AutoModelForCausalLM

    from loradock.training.packed_attention import use_training_attention

    reference = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    packed = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    use_training_attention(packed, packed=True, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(
            packed(input_ids=ids, attention_mask=mask).logits,
            reference(input_ids=ids, attention_mask=mask).logits,
        )
        kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(
            packed.generate(ids[:1], **kwargs), reference.generate(ids[:1], **kwargs)
        )


@pytest.mark.parametrize(
    ("loaded", "packed", "device", "training", "restore"),
    [
        ("sdpa", True, "cpu", "loradock_packed", "sdpa"),
        ("sdpa", True, "cuda", "loradock_packed", "sdpa"),
        ("sdpa", False, "cpu", "eager", "sdpa"),  # measured faster for training on a CPU
        ("sdpa", False, "cuda", "sdpa", None),
        ("eager", True, "cpu", "eager", None),  # a choice that is not sdpa is left alone
    ],
)
def test_training_attention(tiny_base, loaded, packed, device, training, restore):
    from transformers import AutoModelForCausalLM

    from loradock.training.packed_attention import restore_attention, use_training_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation=loaded)
    previous = use_training_attention(model, packed=packed, device=device)
    assert (model.config._attn_implementation, previous) == (training, restore)
    restore_attention(model, previous)
    assert model.config._attn_implementation == loaded
