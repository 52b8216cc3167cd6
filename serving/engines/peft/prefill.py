"""Which arrivals share a prefill forward: prompts of similar length, so little is padding;
and which share one row of it: the same prompt through the same adapter.

The ``n`` choices of one request (and any requests that happen to send the same prompt to the
same adapter) are the same computation until their first sampled token: the prompt's KV cache
and its last logits depend only on the prompt ids and the adapter slot. One row computes them
and each of the others takes a copy (``Runner.prefill``); they sample apart from there. Equal
(slot, prompt ids) is the whole test, so the engine needs no word from the HTTP layer and the
process engine shares the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loradock.serving.engines.peft.sequence import Sequence

# What one more forward call costs, in prompt tokens of compute (Python + per-op overhead of a
# step, measured at a few ms on CPU): the price of splitting a prefill to pad less.
PREFILL_CALL_TOKENS = 64


def prefill_groups(lengths: list[int], call_tokens: int = PREFILL_CALL_TOKENS) -> list[list[int]]:
    """Split prompts (by index) into prefill groups of similar length.

    A group is left-padded to its longest prompt, so one group of a 8-token and a 49-token
    prompt computes 98 token positions for 57 real ones. Sorted by length, the split that
    minimises padded positions plus ``call_tokens`` per group is found exactly (O(n^2) over
    a batch of at most a few dozen).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sizes = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(sizes)  # best[j]: cost of the first j prompts
    cut = [0] * (len(sizes) + 1)
    for j in range(1, len(sizes) + 1):
        for i in range(j):
            cost = best[i] + (j - i) * sizes[j - 1] + call_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(sizes)
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def prompt_owners(seqs: list[Sequence]) -> list[int]:
    """For each sequence, the index of the first one with its adapter slot and prompt ids:
    the row whose prefill it shares (its own index when it is the first)."""
    first: dict[tuple[int, tuple[int, ...]], int] = {}
    return [first.setdefault((s.slot, tuple(s.prompt_ids)), i) for i, s in enumerate(seqs)]


def shared_prefill_groups(seqs: list[Sequence]) -> list[list[Sequence]]:
    """``seqs`` in prefill groups (:func:`prefill_groups` over the distinct prompts, since a
    shared prompt costs the forward once), every sequence in its prompt's owner's group."""
    owners = prompt_owners(seqs)
    distinct = sorted(set(owners))
    groups = prefill_groups([len(seqs[i].prompt_ids) for i in distinct])
    group_of = {distinct[i]: g for g, members in enumerate(groups) for i in members}
    out: list[list[Sequence]] = [[] for _ in groups]
    for seq, owner in zip(seqs, owners, strict=True):
        out[group_of[owner]].append(seq)
    return out
