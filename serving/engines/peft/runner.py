"""The runner: the model's forward passes over the running batch, and its KV cache.

It owns the running sequences (``active``, in batch-row order), their stacked KV cache and
their attention mask. A prefill runs new sequences' prompts together (left-padded) and stacks
their cache under the running batch's, left-padding the shorter; a decode step feeds every
running row its last token. Sequences with the same prompt and adapter slot (a request's
``n`` choices) share one row of a prefill: it is computed once and copied. Rows that finish
are dropped from the cache at once, and the columns every remaining row pads are trimmed, so
the cache never grows without end. Each forward routes every row through its own adapter
slot (``MultiLora.set_rows``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from loradock.serving.engines.peft.kv_cache import SlabCache
from loradock.serving.engines.peft.logprobs import prompt_logprobs
from loradock.serving.engines.peft.multi_lora import MultiLora
from loradock.serving.engines.peft.prefill import prompt_owners
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

    def prefill(self, new: list[Sequence]) -> tuple[torch.Tensor, list[int]]:
        """Run ``new``'s prompts and add them to the batch: their last logits and rows. A
        prompt that several of ``new`` send through one adapter slot is computed once, and
        its cache and logits copied to each (``prefill.prompt_owners``). If it raises, the
        running batch and its cache are as they were (only ``new`` failed)."""
        owners = prompt_owners(new)
        computed = sorted(set(owners))
        row_of = {owner: row for row, owner in enumerate(computed)}
        unique = [new[i] for i in computed]
        width = max(len(s.prompt_ids) for s in unique)
        ids = torch.full((len(unique), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(unique), width), dtype=torch.long)
        for row, seq in enumerate(unique):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids)
            mask[row, width - n :] = 1
        for seq in new:
            seq.pos = len(seq.prompt_ids)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Every position's logits only when a request asks for its prompt's logprobs (echo).
        keep = width if any(s.request.sampling.prompt_logprobs is not None for s in new) else 1
        logits, past = self._forward(ids, mask, positions, None, [s.slot for s in unique], keep)
        index = [row_of[owner] for owner in owners]
        if keep > 1:
            _give_prompt_logprobs(new, index, logits)
        logits = logits[:, -1, :]
        if len(unique) < len(new):
            logits, mask = _share(past, logits, mask, index)
        if self.active:
            past, mask = self._merge(past, mask)
        first = len(self.active)
        self.active = self.active + new
        self._past, self._mask = past, mask
        return logits, list(range(first, len(self.active)))

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


def _give_prompt_logprobs(new: list[Sequence], index: list[int], logits: torch.Tensor) -> None:
    """Each of ``new`` that asks for its prompt's logprobs gets them from its prefill row
    (``index``); a row shared by several is scored once, for the most alternatives any of
    them asked for, and each takes its own number of them."""
    width = logits.shape[1]
    asked: dict[int, tuple[int, list[int]]] = {}  # row -> (most alternatives, prompt ids)
    for seq, row in zip(new, index, strict=True):
        top = seq.request.sampling.prompt_logprobs
        if top is not None:
            asked[row] = (max(top, asked.get(row, (0,))[0]), seq.prompt_ids)
    scored = {
        row: prompt_logprobs(logits[row, width - len(ids) :], ids, top)
        for row, (top, ids) in asked.items()
    }
    for seq, row in zip(new, index, strict=True):
        top = seq.request.sampling.prompt_logprobs
        if top is not None:
            seq.prompt_logprobs = [
                e if e is None or len(e.top) <= top else replace(e, top=e.top[:top])
                for e in scored[row]
            ]
