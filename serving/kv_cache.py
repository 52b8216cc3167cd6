"""A KV cache that grows in place: the decode loop's cache for many sequences at once.

transformers' ``DynamicLayer`` appends each step's keys with ``torch.cat``, copying the whole
cache every token (over half the step time for small models). ``GrowingLayer`` keeps a buffer
with spare room (doubling when full) and writes each step's keys into it, so a step copies only
the new token. The batcher edits the cache between steps (rows join, rows leave, padding is
trimmed) through ``set``, which replaces the buffer; those edits are rare next to steps.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

_MIN_ROOM = 32


class GrowingLayer(DynamicLayer):
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def set(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents (rows selected, left padding added or trimmed)."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self._kbuf, self._vbuf, self._len = keys, values, keys.shape[-2]
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        end = self._len + new
        if self._kbuf is None or end > self._kbuf.shape[-2]:
            room = max(end * 2, end + _MIN_ROOM)
            shape = (*key_states.shape[:2], room, key_states.shape[-1])
            kbuf = key_states.new_empty(shape)
            vbuf = value_states.new_empty((*shape[:3], value_states.shape[-1]))
            if self._len:
                kbuf[:, :, : self._len] = self._kbuf[:, :, : self._len]
                vbuf[:, :, : self._len] = self._vbuf[:, :, : self._len]
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, self._len : end] = key_states
        self._vbuf[:, :, self._len : end] = value_states
        self._len = end
        self.keys = self._kbuf[:, :, :end]
        self.values = self._vbuf[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._len if self.is_initialized else 0


class GrowingCache(Cache):
    """A ``Cache`` of ``GrowingLayer``s, one per decoder layer, created on first use."""

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=GrowingLayer)
