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

The prefixes computed this way are kept (``PrefixCache``, least recently used first out,
bounded in entries and bytes) by adapter and token ids: a later prompt that begins with one,
through the same adapter's weights, starts from a copy of its cache instead of computing it.
Requests of an evaluation or of many chat clients arrive a few at a time once the batch is
full; without the cache each of them would prefill the shared beginning again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loradock.serving.engines.peft.prefill import PREFILL_CALL_TOKENS

if TYPE_CHECKING:
    from loradock.serving.engines.peft.sequence import Sequence

# Shorter common beginnings are not worth a cluster of their own: the prompts that share them
# are prefilled whole.
MIN_PREFIX_TOKENS = 16
# The prefixes kept for later prompts: SmolLM2-135M's cache of an 80-token prefix is ~3.7 MB
# in float32.
CACHE_ENTRIES = 32
CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class PrefixPlan:
    """Which prefix each prefill row starts with, and the distinct prefixes to compute."""

    prefixes: list[list[int]]  # token ids of each distinct prefix
    slots: list[int]  # the adapter slot each prefix is computed through
    of_row: list[int]  # per row: the index of its prefix, -1 for none
    length: list[int]  # per row: how many of its prompt's tokens the prefix holds (0: none)
    # per prefix: its cache from ``PrefixCache`` (per layer: keys, values), None to compute
    cached: list[Any] = field(default_factory=list)
    keys: list[Hashable] = field(default_factory=list)  # per prefix: its adapter's key

    def saved_tokens(self) -> int:
        """Prompt tokens not computed: the rows' prefixes, less the prefixes computed once."""
        computed = sum(
            len(p) for p, kv in zip(self.prefixes, self.cached, strict=True) if kv is None
        )
        return sum(self.length) - computed


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


def _adapter_key(seq: Sequence) -> Hashable:
    """What a prefix's cache depends on besides its tokens: the adapter's weights."""
    return seq.adapter.key if seq.adapter is not None else None


def plan_prefixes(rows: list[Sequence], cache: PrefixCache | None = None) -> PrefixPlan | None:
    """The shared prefixes of ``rows`` (one prefill's distinct prompts), or None when no
    cluster is worth computing apart and ``cache`` has none of their beginnings."""
    by_slot: dict[int, list[int]] = {}
    for i, seq in enumerate(rows):
        by_slot.setdefault(seq.slot, []).append(i)
    prompts = [list(seq.prompt_ids) for seq in rows]
    plan = PrefixPlan([], [], [-1] * len(rows), [0] * len(rows))

    def add(members: list[int], shared: int, kv: Any) -> None:
        for i in members:
            plan.of_row[i], plan.length[i] = len(plan.prefixes), shared
        plan.prefixes.append(prompts[members[0]][:shared])
        plan.slots.append(rows[members[0]].slot)
        plan.cached.append(kv)
        plan.keys.append(_adapter_key(rows[members[0]]))

    for members in by_slot.values():
        if len(members) < 2:
            continue
        for run, shared in _clusters(prompts, members):
            key = _adapter_key(rows[run[0]])
            found = cache.get(key, prompts[run[0]][:shared]) if cache is not None else None
            add(run, shared, found)
    if cache is not None:
        hits: dict[tuple[Hashable, int], list[int]] = {}  # rows starting with one kept prefix
        kept: dict[tuple[Hashable, int], Any] = {}
        for i, seq in enumerate(rows):
            hit = plan.of_row[i] < 0 and cache.longest(_adapter_key(seq), prompts[i])
            if hit:
                where = (_adapter_key(seq), hit[0])
                hits.setdefault(where, []).append(i)
                kept[where] = hit[1]
        for where, members in hits.items():
            add(members, where[1], kept[where])
    return plan if plan.prefixes else None


@dataclass
class PrefixCache:
    """Computed prefixes' KV caches by (adapter key, token ids), least recently used first
    out (model thread only)."""

    max_entries: int = CACHE_ENTRIES
    max_bytes: int = CACHE_BYTES
    _entries: OrderedDict[tuple[Hashable, tuple[int, ...]], tuple[Any, int]] = field(
        default_factory=OrderedDict
    )
    nbytes: int = 0

    def get(self, key: Hashable, tokens: list[int]) -> Any:
        entry = self._entries.get((key, tuple(tokens)))
        if entry is None:
            return None
        self._entries.move_to_end((key, tuple(tokens)))
        return entry[0]

    def longest(self, key: Hashable, prompt: list[int]) -> tuple[int, Any] | None:
        """The longest kept prefix of ``prompt`` through ``key`` that leaves it a token to
        compute: (its length, its cache)."""
        best: tuple[int, tuple[Hashable, tuple[int, ...]]] | None = None
        for entry_key in self._entries:
            owner, tokens = entry_key
            n = len(tokens)
            fits = owner == key and MIN_PREFIX_TOKENS <= n < len(prompt)
            if fits and (best is None or n > best[0]) and tuple(prompt[:n]) == tokens:
                best = (n, entry_key)
        if best is None:
            return None
        self._entries.move_to_end(best[1])
        return best[0], self._entries[best[1]][0]

    def put(self, key: Hashable, tokens: list[int], layers: Any) -> None:
        size = sum(k.nbytes + v.nbytes for k, v in layers)
        if size > self.max_bytes or (key, tuple(tokens)) in self._entries:
            return
        self._entries[(key, tuple(tokens))] = (layers, size)
        self.nbytes += size
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            _, (_, freed) = self._entries.popitem(last=False)
            self.nbytes -= freed

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)
