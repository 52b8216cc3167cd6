"""A KV cache that grows in place, for the runner's long-lived running batch.

transformers' ``DynamicLayer.update`` concatenates every step: the whole cache of every layer
is copied to append one token, so a decode step's copying grows with the context (32 rows of 80
tokens: about 10 MB a step on the bench model, a fifth of the step). Here each layer keeps
its keys and values in a buffer with spare room and appends by writing into it; ``keys`` and
``values`` stay plain views of the filled part, so the model and the runner read them as
plain tensors. When the runner replaces them (a row leaves, new rows join: ``Runner._merge``
and ``drop``), the next update adopts the new tensors into a fresh buffer: one copy per change
of the batch, not one per step.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# Spare room a buffer gets when it is (re)built, in tokens: a fresh buffer lasts this many
# decode steps before the next copy; a quarter of the length for long contexts.
GROW_TOKENS = 64


class SlabLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``update`` writes into spare room instead of concatenating."""

    def __init__(self) -> None:
        super().__init__()
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        incoming = key_states.shape[-2]
        current = self.keys.shape[-2] if self.keys.numel() else 0
        if (
            self._key_buffer is None
            or not _is_view_of(self.keys, self._key_buffer)
            or not _is_view_of(self.values, self._value_buffer)
            or current + incoming > self._key_buffer.shape[-2]
        ):
            self._rebuffer(key_states, value_states, current, incoming)
        end = current + incoming
        self._key_buffer[:, :, current:end].copy_(key_states)
        self._value_buffer[:, :, current:end].copy_(value_states)
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values

    def _rebuffer(
        self, key_states: torch.Tensor, value_states: torch.Tensor, current: int, incoming: int
    ) -> None:
        """New buffers holding the current keys/values (set by the runner, or full ones)."""
        room = current + incoming + max(GROW_TOKENS, (current + incoming) // 4)
        batch, heads, _, _ = key_states.shape
        keys = key_states.new_empty((batch, heads, room, key_states.shape[-1]))
        values = value_states.new_empty((batch, heads, room, value_states.shape[-1]))
        if current:
            keys[:, :, :current].copy_(self.keys)
            values[:, :, :current].copy_(self.values)
        self._key_buffer, self._value_buffer = keys, values

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def _is_view_of(tensor: torch.Tensor, buffer: torch.Tensor | None) -> bool:
    """``tensor`` is still the filled part of ``buffer`` (nobody swapped it for a new one)."""
    return (
        buffer is not None
        and tensor.data_ptr() == buffer.data_ptr()
        and tensor.shape[:2] == buffer.shape[:2]
        and tensor.stride() == buffer.stride()
    )


class SlabCache(DynamicCache):
    """``DynamicCache`` made of ``SlabLayer``s (created lazily, one per decoder layer)."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=SlabLayer)
