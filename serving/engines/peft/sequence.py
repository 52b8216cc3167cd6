"""One request's state on the model thread, from the queue to its last token."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from loradock.serving.engines.base import GenerationRequest, TokenLogprob
from loradock.serving.engines.peft.adapter_cache import CpuAdapter
from loradock.serving.engines.peft.delivery import Sink
from loradock.serving.engines.peft.output import TextState


@dataclass
class Sequence:
    request: GenerationRequest
    prompt_ids: list[int]
    adapter: CpuAdapter | None  # None: the base model (or not read yet, while ``loading``)
    max_new: int
    text: TextState
    sink: Sink  # where its chunks go (``delivery.py``), addressed to ``reply_to``
    reply_to: Any
    gen: torch.Generator | None = None
    cancelled: bool = False
    # The adapter is still being read (``Scheduler.loaded`` clears it): the sequence waits in
    # the queue meanwhile, so the read overlaps the arrival-gathering wait instead of coming
    # before it, and it holds up nobody.
    loading: bool = False
    slot: int = 0  # its adapter's slot once admitted (pinned while it runs); 0: the base
    pinned: bool = False  # it holds a pin on its adapter's slot (released once, on any end)
    generated: int = 0
    pos: int = 0  # position id of the next input token
    last_token: int = 0
    held_text: str = ""  # a non-streaming request's text and ids not sent yet
    held_ids: list[int] = field(default_factory=list)
    held_logprobs: list[TokenLogprob] = field(default_factory=list)
    # With ``prompt_logprobs``: set by the runner's prefill, sent with the first chunk.
    prompt_logprobs: list[TokenLogprob | None] | None = None
    grammar: Any = None  # its output constraint's matcher (``grammar.SequenceGrammar``)
    enqueued_at: float = field(default_factory=time.perf_counter)

    def fail(self, error: BaseException) -> None:
        self.sink.fail(self.reply_to, error)
