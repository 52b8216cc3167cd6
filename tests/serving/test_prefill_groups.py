"""Prefill grouping: prompts of similar length share a forward, so little compute pads."""

from __future__ import annotations

import pytest

from loradock.serving.engines.peft.prefill import prefill_groups


def padded(lengths: list[int], groups: list[list[int]]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


@pytest.mark.parametrize(
    ("lengths", "call_tokens", "expected"),
    [
        ([], 64, []),
        ([7], 64, [[7]]),
        ([10, 10, 10], 64, [[10, 10, 10]]),
        ([8, 49], 1000, [[8, 49]]),  # a forward costs more than the padding it saves
        ([49, 8], 0, [[8], [49]]),  # free forwards: every length on its own
        ([8, 9, 48, 49], 16, [[8, 9], [48, 49]]),
    ],
)
def test_groups_by_length(lengths, call_tokens, expected):
    groups = prefill_groups(lengths, call_tokens)
    assert [[lengths[i] for i in g] for g in groups] == expected


def test_bench_prompts_pad_less_and_keep_every_prompt_once():
    lengths = [21, 8, 38, 18, 49, 40, 16, 24] * 4
    groups = prefill_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert padded(lengths, groups) + 64 * len(groups) < len(lengths) * max(lengths) + 64
    assert padded(lengths, groups) < 0.7 * len(lengths) * max(lengths)
