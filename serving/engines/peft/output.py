"""The output stage: a step's logits -> tokens -> text -> chunks, handed to each request's sink.

For every row of a step it samples the next token (each sequence with its own sampling options
and its own seeded generator, so a request with a ``seed`` gets the same text whatever shares
its batch), decodes it incrementally, watches for EOS, stop strings and ``max_tokens``, and
holds back a non-streaming answer after its first token (time to first token) until its end:
one chunk instead of one event-loop wake-up per token. The step's chunks are grouped by sink
(``delivery.py``) and handed over once per step by the scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from loradock.errors import GenerationError
from loradock.serving.engines.base import GenerationChunk, TokenLogprob
from loradock.serving.engines.peft.delivery import Outbox
from loradock.serving.engines.peft.grammar import constrain
from loradock.serving.engines.peft.logprobs import RowLogprobs, rows_logprobs
from loradock.serving.engines.peft.sampling import (
    adjust_logits,
    is_greedy,
    make_generator,
    sample_next,
)

if TYPE_CHECKING:
    from loradock.serving.engines.peft.sequence import Sequence

log = logging.getLogger(__name__)


@dataclass
class TextState:
    """Generated ids -> text emitted so far, holding back what may still change.

    Detokenization is incremental (the vLLM/TGI scheme): each token decodes only a short
    window of ids (from ``_prefix`` on) instead of the whole answer, so a token costs the same
    at step 500 as at step 1. Text is held back while the window ends in an incomplete UTF-8
    sequence (decoded as U+FFFD) or while its tail could be the start of a stop string.
    """

    tokenizer: object
    stop: tuple[str, ...] = ()
    min_tokens: int = 0  # stop strings end nothing before this many tokens
    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # every character decoded so far
    emitted: str = ""
    stopped: bool = False
    _prefix: int = 0  # ids before this are final text
    _read: int = 0  # ids before this are in `text`

    def add(self, token_id: int) -> str:
        """Append a token; return the new text that is safe to send now."""
        self.token_ids.append(token_id)
        before = len(self.text)
        if not self._advance(final=False):
            return ""
        text = self.text
        if len(self.token_ids) < self.min_tokens:
            return self._emit(text)
        longest = max((len(stop) for stop in self.stop), default=0)
        # A stop string can only end in the new characters: search from just before them.
        since = max(0, before - longest + 1)
        for stop in self.stop:
            pos = text.find(stop, since)
            if pos != -1:
                self.stopped = True
                return self._emit(text[:pos])
        hold = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        return self._emit(text[: len(text) - hold])

    def add_quietly(self, token_id: int) -> None:
        """Append a token without decoding it: an answer sent whole, with no stop string to
        watch for, is decoded once by :meth:`flush` (one window decode, not two a token)."""
        self.token_ids.append(token_id)

    def flush(self) -> str:
        """At the end: whatever was held back for a stop string that never came."""
        if self.stopped:
            return ""
        self._advance(final=True)
        return self._emit(self.text)

    def _advance(self, *, final: bool) -> bool:
        """Decode the window of new ids into ``text``; False while it is incomplete UTF-8."""
        decode = self.tokenizer.decode
        ids = self.token_ids
        prefix_text = decode(ids[self._prefix : self._read], skip_special_tokens=True)
        new_text = decode(ids[self._prefix :], skip_special_tokens=True)
        if len(new_text) <= len(prefix_text) or (new_text.endswith("\ufffd") and not final):
            return False
        self.text += new_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(ids)
        return True

    def _emit(self, text: str) -> str:
        if len(text) <= len(self.emitted):
            return ""
        delta = text[len(self.emitted) :]
        self.emitted = text
        return delta


class OutputStage:
    """Turns a step's logits into each running sequence's next chunk."""

    def __init__(self, eos_ids: set[int]):
        self.eos_ids = eos_ids

    def step(
        self, active: list[Sequence], logits: torch.Tensor, rows: list[int]
    ) -> tuple[set[int], Outbox]:
        """Sample one token for each of ``rows`` (``logits[i]`` is ``active[rows[i]]``'s);
        the rows that finished (or were cancelled, or failed) and the chunks to deliver. A row
        that fails (its logits not finite, its sampling raising) fails its own request only:
        the error goes to it, and its row leaves the batch like a finished one."""
        logits = logits.float().cpu()
        # One call for every greedy row; a row's max is NaN or inf when any logit is NaN or
        # +inf (torch.max propagates NaN), so the same call finds rows that cannot be sampled.
        best, greedy = logits.max(dim=-1)
        finite = torch.isfinite(best).tolist()
        greedy = greedy.tolist()
        # One log-softmax and top-k for the rows that want logprobs (of the raw logits).
        tops = [active[row].request.sampling.logprobs for row in rows]
        want = [i for i, top in enumerate(tops) if top is not None]
        logprobs = rows_logprobs(logits, want, [tops[i] for i in want])
        constrain(active, rows, logits, greedy)  # rows with an output constraint: grammar.py
        finished: set[int] = set()
        outbox: Outbox = {}
        for i, row in enumerate(rows):
            seq = active[row]
            if seq.cancelled:
                finished.add(row)
                continue
            try:
                chunk = self._next(seq, logits[i], greedy[i], finite[i], logprobs.get(i))
            except Exception as exc:  # this request's failure, not the batch's
                log.warning("request %s failed: %r", seq.request.request_id, exc)
                seq.fail(exc)
                finished.add(row)
                continue
            if chunk is None:
                continue
            outbox.setdefault(seq.sink, []).append((seq.reply_to, chunk))
            if chunk.finish_reason is not None:
                finished.add(row)
        return finished, outbox

    def _next(
        self,
        seq: Sequence,
        logits: torch.Tensor,
        greedy: int,
        finite: bool,
        logprobs: RowLogprobs | None,
    ) -> GenerationChunk | None:
        """``seq``'s next token (from its row of ``logits``) and its chunk."""
        if not finite:
            raise GenerationError(
                "The model's output for this request is not finite (NaN or inf), so no token "
                "can be chosen: its adapter or its prompt drives the model out of range."
            )
        params = seq.request.sampling
        if seq.generated == 0:
            seq.gen = make_generator(params.seed)
            seq.text.min_tokens = params.min_tokens
        if params.adjusts_logits():
            adjusted = adjust_logits(
                logits,
                params,
                prompt_ids=seq.prompt_ids,
                output_ids=seq.text.token_ids,
                end_ids=self.eos_ids,
            )
            token = sample_next(adjusted, params, seq.gen)
        else:
            token = greedy if is_greedy(params) else sample_next(logits, params, seq.gen)
        entry = None if logprobs is None else logprobs.entry(token, params.logprobs)
        seq.generated += 1
        seq.pos += 1
        seq.last_token = token
        if seq.grammar is not None:
            seq.grammar.accept(token)
        return self._chunk(seq, token, entry)

    def _chunk(
        self, seq: Sequence, token: int, entry: TokenLogprob | None
    ) -> GenerationChunk | None:
        """``token``'s chunk for ``seq``, or None while a non-streaming answer is held."""
        reason = None
        params = seq.request.sampling
        # Sent whole, no stop strings: nothing to decode until the end (see below).
        quiet = not seq.request.stream and seq.generated > 1 and not seq.text.stop
        if token in self.eos_ids or token in params.stop_token_ids:
            delta, reason = seq.text.flush(), "stop"
        elif quiet:
            seq.text.add_quietly(token)
            delta = ""
            if seq.generated >= seq.max_new:
                delta, reason = seq.text.flush(), "length"
        else:
            delta = seq.text.add(token)
            if seq.text.stopped:
                reason = "stop"
            elif seq.generated >= seq.max_new:
                delta, reason = delta + seq.text.flush(), "length"
        entries = None if entry is None else [entry]
        if not seq.request.stream and seq.generated > 1:
            # The whole answer is all it wants: hold tokens after the first (TTFT) and send
            # them at the end, one event-loop wake-up instead of one per token.
            if reason is None:
                seq.held_text += delta
                seq.held_ids.append(token)
                seq.held_logprobs.extend(entries or ())
                return None
            delta, seq.held_text = seq.held_text + delta, ""
            token_ids, seq.held_ids = [*seq.held_ids, token], []
            if entries is not None:
                entries, seq.held_logprobs = [*seq.held_logprobs, *entries], []
        else:
            token_ids = [token]
        chunk = GenerationChunk(
            text=delta,
            token_ids=token_ids,
            prompt_tokens=len(seq.prompt_ids),
            completion_tokens=seq.generated,
            finish_reason=reason,
            logprobs=entries,
        )
        if seq.generated == 1 and params.prompt_logprobs is not None:
            chunk.prompt_logprobs = seq.prompt_logprobs
            chunk.prompt_token_ids = list(seq.prompt_ids)
        return chunk
