"""The runner: the model's forward passes over the running batch, and its KV cache.

It owns the running sequences (``active``, in batch-row order), their stacked KV cache and
their attention mask. A prefill runs new sequences' prompts together (left-padded) and stacks
their cache under the running batch's, left-padding the shorter; a decode step feeds every
running row its last token. Sequences with the same prompt and adapter slot (a request's
``n`` choices) share one row of a prefill: it is computed once and copied; prompts that begin
alike compute their common beginning once, then each its rest after a copy of its cache
(``prefix.py``; a row's cache may then hold masked columns between the two). Rows that finish
are dropped from the cache at once, and the columns every remaining row pads are trimmed, so
the cache never grows without end. Each forward routes every row through its own adapter
slot (``MultiLora.set_rows``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from loradock.serving.engines.peft.kv_cache import SlabCache
from loradock.serving.engines.peft.logprobs import prompt_logprobs
from loradock.serving.engines.peft.multi_lora import MultiLora
from loradock.serving.engines.peft.prefill import prompt_owners
from loradock.serving.engines.peft.prefix import PrefixCache, PrefixPlan, plan_prefixes
from loradock.serving.engines.peft.sequence import Sequence


class Runner:
    """Forward passes for the scheduler (model thread only)."""

    def __init__(self, model: Any, lora: MultiLora, *, pad_id: int, device: str):
        self.model = model
        self.lora = lora
        self.pad_id = pad_id
        self.device = device
        self.active: list[Sequence] = []
        self._past: Any = None
        self._mask: torch.Tensor | None = None
        self.share_prefixes = True  # compute prompts' common beginnings once (prefix.py)
        self.prefix_cache = PrefixCache()
        # The last prefill's prompt tokens: computed, and taken from another row's (a copy of
        # the same prompt, or a shared beginning).
        self.last_prefill_tokens = (0, 0)

    def prefill(self, new: list[Sequence]) -> tuple[torch.Tensor, list[int]]:
        """Run ``new``'s prompts and add them to the batch: their last logits and rows. A
        prompt that several of ``new`` send through one adapter slot is computed once, and
        its cache and logits copied to each (``prefill.prompt_owners``); prompts that begin
        alike compute their common beginning once (``prefix.plan_prefixes``). If it raises,
        the running batch and its cache are as they were (only ``new`` failed)."""
        owners = prompt_owners(new)
        distinct = sorted(set(owners))
        row_of = {owner: row for row, owner in enumerate(distinct)}
        unique = [new[i] for i in distinct]
        for seq in new:
            seq.pos = len(seq.prompt_ids)
        # Every position's logits only when a request asks for its prompt's logprobs (echo).
        echo = any(s.request.sampling.prompt_logprobs is not None for s in new)
        # A kept prefix has no logits to give echo's prompt logprobs: echo computes its own.
        cache = None if echo else self.prefix_cache
        plan = plan_prefixes(unique, cache) if self.share_prefixes else None
        if plan is None:
            logits, past, mask, prompt_logits = self._prefill_whole(unique, echo)
        else:
            logits, past, mask, prompt_logits = self._prefill_after_prefixes(unique, plan, echo)
        total = sum(len(s.prompt_ids) for s in new)
        computed = sum(len(s.prompt_ids) for s in unique) - (plan.saved_tokens() if plan else 0)
        index = [row_of[owner] for owner in owners]
        if echo:
            _give_prompt_logprobs(new, index, prompt_logits)
        if len(unique) < len(new):
            logits, mask = _share(past, logits, mask, index)
        if self.active:
            past, mask = self._merge(past, mask)
        first = len(self.active)
        self.active = self.active + new
        self._past, self._mask = past, mask
        self.last_prefill_tokens = (computed, total - computed)
        return logits, list(range(first, len(self.active)))

    def _prefill_whole(self, rows: list[Sequence], echo: bool) -> tuple[Any, ...]:
        """One forward over ``rows``' whole prompts: last logits, cache, mask, and each row's
        prompt-position logits (``echo``)."""
        ids, mask = _left_padded([s.prompt_ids for s in rows], self.pad_id)
        width = ids.shape[1]
        logits, past = self._forward(
            ids, mask, _positions(mask), None, [s.slot for s in rows], width if echo else 1
        )

        def prompt_logits(row: int) -> torch.Tensor:
            return logits[row, width - len(rows[row].prompt_ids) :]

        return logits[:, -1, :], past, mask, prompt_logits

    def _prefill_after_prefixes(
        self, rows: list[Sequence], plan: PrefixPlan, echo: bool
    ) -> tuple[Any, ...]:
        """Each shared prefix once (or from the prefix cache), then every row's rest after a
        copy of its prefix's cache (a row without one: its whole prompt, after masked-out
        columns)."""
        pre_logits, prefix_kv = self._prefixes(plan, echo)
        pre_width = max(len(p) for p in plan.prefixes)
        source = torch.tensor([max(k, 0) for k in plan.of_row], dtype=torch.long)
        past = SlabCache()
        for layer, pairs in enumerate(zip(*prefix_kv, strict=True)):
            # every prefix right-aligned in pre_width columns, then each row's prefix
            keys, values = (
                torch.cat(
                    [F.pad(pair[i], (0, 0, pre_width - pair[i].shape[2], 0)) for pair in pairs]
                )
                for i in (0, 1)
            )
            on = source.to(keys.device)
            past.update(keys.index_select(0, on), values.index_select(0, on), layer)
        pre_mask = torch.zeros((len(plan.prefixes), pre_width), dtype=torch.long)
        for k, prefix in enumerate(plan.prefixes):
            pre_mask[k, pre_width - len(prefix) :] = 1
        has_prefix = torch.tensor([k >= 0 for k in plan.of_row], dtype=torch.long)
        past_mask = pre_mask.index_select(0, source) * has_prefix[:, None]
        rests = [s.prompt_ids[n:] for s, n in zip(rows, plan.length, strict=True)]
        ids, rest_mask = _left_padded(rests, self.pad_id)
        width = ids.shape[1]
        mask = torch.cat([past_mask, rest_mask], dim=1)
        positions = _positions(mask)[:, pre_width:]
        logits, past = self._forward(
            ids, mask, positions, past, [s.slot for s in rows], width if echo else 1
        )

        def prompt_logits(row: int) -> torch.Tensor:
            rest = logits[row, width - len(rests[row]) :]
            k = plan.of_row[row]
            return rest if k < 0 else torch.cat([pre_logits[k], rest])

        return logits[:, -1, :], past, mask, prompt_logits

    def _prefixes(self, plan: PrefixPlan, echo: bool) -> tuple[dict[int, Any], list[Any]]:
        """The prefixes the cache lacks, computed in one forward and kept: each one's logits
        at its positions (``echo``) and every prefix's per-layer (keys, values)."""
        todo = [k for k, kv in enumerate(plan.cached) if kv is None]
        prefix_kv = list(plan.cached)
        logits_of: dict[int, torch.Tensor] = {}
        if not todo:
            return logits_of, prefix_kv
        ids, mask = _left_padded([plan.prefixes[k] for k in todo], self.pad_id)
        width = ids.shape[1]
        slots = [plan.slots[k] for k in todo]
        logits, past = self._forward(ids, mask, _positions(mask), None, slots, width if echo else 1)
        for j, k in enumerate(todo):
            n = len(plan.prefixes[k])
            prefix_kv[k] = [
                (layer.keys[j : j + 1, :, width - n :].clone(),
                 layer.values[j : j + 1, :, width - n :].clone())
                for layer in past.layers
            ]  # fmt: skip
            if echo:
                logits_of[k] = logits[j, width - n :]
            self.prefix_cache.put(plan.keys[k], plan.prefixes[k], prefix_kv[k])
        return logits_of, prefix_kv

    def decode(self) -> tuple[torch.Tensor, list[int]]:
        """One token for every running row: the logits and rows."""
        active = self.active
        ids = torch.tensor([[s.last_token] for s in active], dtype=torch.long)
        positions = torch.tensor([[s.pos] for s in active], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
        logits, self._past = self._forward(
            ids, self._mask, positions, self._past, [s.slot for s in active]
        )
        return logits[:, -1, :], list(range(len(active)))

    def drop(self, rows: set[int]) -> None:
        """Remove finished rows from the batch and their cache."""
        keep = [i for i in range(len(self.active)) if i not in rows]
        if not keep:
            self.reset()
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = self._mask[index]
        # Columns every remaining row pads: drop them so the cache does not grow without end.
        used = mask.sum(dim=0).nonzero()
        start = int(used[0].item()) if len(used) else 0
        for layer in self._past.layers:
            kept = index.to(layer.keys.device)
            layer.keys = layer.keys[kept, :, start:, :]
            layer.values = layer.values[kept, :, start:, :]
        self._mask = mask[:, start:]
        self.active = [self.active[i] for i in keep]

    def reset(self) -> None:
        self.active, self._past, self._mask = [], None, None

    def _forward(
        self, ids, mask, positions, past, slots: list[int], keep: int = 1
    ) -> tuple[torch.Tensor, Any]:
        """The logits of the last ``keep`` positions, and the cache."""
        self.lora.set_rows(slots)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=past if past is not None else SlabCache(),
            use_cache=True,
            logits_to_keep=keep,
        )
        return out.logits, out.past_key_values

    def _merge(self, past: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Stack a freshly prefilled cache under the running one, left-padding the shorter.
        Every new tensor is built before any is assigned: if one cannot be (out of memory),
        the running batch's cache is as it was."""
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        pads = (0, 0, width - old_t, 0), (0, 0, width - new_t, 0)
        merged = [
            [
                torch.cat([F.pad(getattr(old, attr), pads[0]), F.pad(getattr(new, attr), pads[1])])
                for attr in ("keys", "values")
            ]
            for old, new in zip(self._past.layers, past.layers, strict=True)
        ]
        merged_mask = torch.cat(
            [F.pad(self._mask, (width - old_t, 0)), F.pad(mask, (width - new_t, 0))], dim=0
        )
        for layer, (keys, values) in zip(self._past.layers, merged, strict=True):
            layer.keys, layer.values = keys, values
        return self._past, merged_mask


def _share(
    past: Any, logits: torch.Tensor, mask: torch.Tensor, index: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``index[i]`` of a prefill's cache, last logits and mask, for each sequence ``i``:
    the copies of a shared prompt's row (the cache's layers in place)."""
    rows = torch.tensor(index, dtype=torch.long)
    for layer in past.layers:
        on = rows.to(layer.keys.device)
        layer.keys = layer.keys.index_select(0, on)
        layer.values = layer.values.index_select(0, on)
    return logits.index_select(0, rows.to(logits.device)), mask.index_select(0, rows)


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``prompts`` as one left-padded batch of ids, and its attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids: each row counts only the columns its mask keeps."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _give_prompt_logprobs(
    new: list[Sequence], index: list[int], logits: Callable[[int], torch.Tensor]
) -> None:
    """Each of ``new`` that asks for its prompt's logprobs gets them from its prefill row
    (``index``; ``logits(row)``: that row's logits at each prompt position); a row shared by
    several is scored once, for the most alternatives any of them asked for, and each takes
    its own number of them."""
    asked: dict[int, tuple[int, list[int]]] = {}  # row -> (most alternatives, prompt ids)
    for seq, row in zip(new, index, strict=True):
        top = seq.request.sampling.prompt_logprobs
        if top is not None:
            asked[row] = (max(top, asked.get(row, (0,))[0]), seq.prompt_ids)
    scored = {row: prompt_logprobs(logits(row), ids, top) for row, (top, ids) in asked.items()}
    for seq, row in zip(new, index, strict=True):
        top = seq.request.sampling.prompt_logprobs
        if top is not None:
            seq.prompt_logprobs = [
                e if e is None or len(e.top) <= top else replace(e, top=e.top[:top])
                for e in scored[row]
            ]
