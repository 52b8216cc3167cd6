"""Prompts that begin alike share the prefill of their beginning.

Requests to one endpoint often start with the same tokens: the chat template's system prompt
(SmolLM2's adds ~25 tokens to every chat request), or a task's instructions ahead of each
input, as in an evaluation (~80 of a ~95-token prompt on the shipped ``dates`` task). Within
one prefill, the prompts that go through the same adapter slot and share at least
``MIN_PREFIX_TOKENS`` leading tokens are clustered; the runner computes each cluster's common
prefix once, copies its KV cache to every member and computes only the rest of each prompt
(``Runner.prefill``). The KV of a prefix depends only on its tokens and the adapter, so the
outputs are those of a full prefill up to float rounding (the attention sums in another order).

Each member keeps at least its last token to compute, since its first sampled token comes
from that position's logits. A cluster is shared only when the tokens it saves outweigh the
extra forward call (``PREFILL_CALL_TOKENS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loradock.serving.engines.peft.prefill import PREFILL_CALL_TOKENS

if TYPE_CHECKING:
    from loradock.serving.engines.peft.sequence import Sequence

# Shorter common beginnings are not worth a cluster of their own: the prompts that share them
# are prefilled whole.
MIN_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class PrefixPlan:
    """Which prefix each prefill row starts with, and the distinct prefixes to compute."""

    prefixes: list[list[int]]  # token ids of each distinct prefix
    slots: list[int]  # the adapter slot each prefix is computed through
    of_row: list[int]  # per row: the index of its prefix, -1 for none
    length: list[int]  # per row: how many of its prompt's tokens the prefix holds (0: none)

    def saved_tokens(self) -> int:
        return sum(self.length) - sum(len(p) for p in self.prefixes)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _clusters(prompts: list[list[int]], members: list[int]) -> list[tuple[list[int], int]]:
    """``members`` (indices into ``prompts``) in runs that share ``MIN_PREFIX_TOKENS``: sorted
    by their ids, neighbours share the longest beginnings; a run's shared length is the least
    of its neighbours' (each row keeps its last token to compute)."""
    order = sorted(members, key=lambda i: prompts[i])
    runs: list[tuple[list[int], int]] = []
    run, shared = [order[0]], len(prompts[order[0]]) - 1
    for prev, cur in zip(order, order[1:], strict=False):
        common = min(common_prefix(prompts[prev], prompts[cur]), len(prompts[cur]) - 1, shared)
        if common >= MIN_PREFIX_TOKENS:
            run, shared = [*run, cur], common
            continue
        runs.append((run, shared))
        run, shared = [cur], len(prompts[cur]) - 1
    runs.append((run, shared))
    return [(r, n) for r, n in runs if len(r) > 1 and (len(r) - 1) * n > PREFILL_CALL_TOKENS]


def plan_prefixes(rows: list[Sequence]) -> PrefixPlan | None:
    """The shared prefixes of ``rows`` (one prefill's distinct prompts), or None when no
    cluster is worth computing apart."""
    by_slot: dict[int, list[int]] = {}
    for i, seq in enumerate(rows):
        by_slot.setdefault(seq.slot, []).append(i)
    prompts = [list(seq.prompt_ids) for seq in rows]
    plan = PrefixPlan([], [], [-1] * len(rows), [0] * len(rows))
    for slot, members in by_slot.items():
        if len(members) < 2:
            continue
        for run, shared in _clusters(prompts, members):
            for i in run:
                plan.of_row[i], plan.length[i] = len(plan.prefixes), shared
            plan.prefixes.append(prompts[run[0]][:shared])
            plan.slots.append(slot)
    return plan if plan.prefixes else None
