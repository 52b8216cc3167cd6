"""Sampling and incremental text: stop strings are cut and never leak while streaming."""

from __future__ import annotations

import pytest
import torch

from loradock.serving.engines.base import SamplingParams
from loradock.serving.engines.peft.output import TextState
from loradock.serving.engines.peft.sampling import make_generator, sample_next


class CharTokenizer:
    """One token per character: makes stop-string cases easy to read."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def stream(text: str, stop: tuple[str, ...]) -> tuple[list[str], TextState]:
    state = TextState(CharTokenizer(), stop=stop)
    out = []
    for ch in text:
        out.append(state.add(ord(ch)))
        if state.stopped:
            break
    else:
        out.append(state.flush())
    return out, state


@pytest.mark.parametrize(
    ("text", "stop", "expected", "stopped"),
    [
        ("hello world", (), "hello world", False),
        ("hello world", ("wor",), "hello ", True),
        ("hello world", ("xyz",), "hello world", False),
        ("abcabd", ("abd",), "abc", True),
        ("a\nb", ("\n",), "a", True),
        ("hello wo", ("world",), "hello wo", False),  # held back, then flushed at the end
    ],
)
def test_stop_strings(text, stop, expected, stopped):
    pieces, state = stream(text, stop)
    assert "".join(pieces) == expected
    assert state.stopped is stopped
    for s in stop:  # no piece ever shows a stop string, even partly sent then retracted
        assert s not in "".join(pieces)


def test_greedy_is_argmax():
    logits = torch.tensor([0.1, 3.0, 0.2])
    assert sample_next(logits, SamplingParams(temperature=0), None) == 1


def test_seeded_sampling_repeats_and_top_p_limits():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, top_p=1.0)
    a = [sample_next(logits, params, g) for g in [make_generator(3)] for _ in range(20)]
    b = [sample_next(logits, params, g) for g in [make_generator(3)] for _ in range(20)]
    assert a == b
    tight = SamplingParams(temperature=1.0, top_p=0.01)
    gen = make_generator(1)
    assert {sample_next(logits, tight, gen) for _ in range(30)} == {int(logits.argmax())}


@pytest.mark.parametrize("stop", [(), ("wör",), ("🙂",)])
def test_incremental_text_matches_full_decode(tiny_base, stop):
    """Byte-level BPE splits multi-byte characters across tokens: the window decoding must
    hold them back and still end with exactly the text a full decode gives."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    text = "héllo wörld, 日本語 🙂 done"
    ids = tok(text)["input_ids"]
    state = TextState(tok, stop=stop)
    out = []
    for i in ids:
        out.append(state.add(i))
        assert "\ufffd" not in out[-1]
        if state.stopped:
            break
    else:
        out.append(state.flush())
    full = tok.decode(ids, skip_special_tokens=True)
    expected = full[: full.find(stop[0])] if stop else full
    assert "".join(out) == expected


@pytest.mark.parametrize("loud", [0, 1, 2, 5])
def test_quiet_tokens_then_flush_give_the_full_text(tiny_base, loud):
    """An answer sent whole decodes its first ``loud`` tokens as they come (the first one is
    sent at once, for time to first token) and the rest once at the end: same text."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    ids = tok("héllo wörld, 日本語 🙂 done")["input_ids"]
    state = TextState(tok)
    out = [state.add(i) for i in ids[:loud]]
    for i in ids[loud:]:
        state.add_quietly(i)
    out.append(state.flush())
    assert "".join(out) == tok.decode(ids, skip_special_tokens=True)
