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
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from loradock.errors import GenerationError, RequestError
from loradock.serving.engines.base import GenerationChunk, SamplingParams
from loradock.serving.engines.peft.delivery import Outbox

if TYPE_CHECKING:
    from loradock.serving.engines.peft.sequence import Sequence

log = logging.getLogger(__name__)
# Below this temperature sampling is greedy: logits / 1e-40 overflow to inf, and the softmax
# of a row with inf in it is NaN. At 1e-5 a gap of 0.001 between the two best logits already
# gives the runner-up e**-100 of the best's probability: greedy in all but name.
GREEDY_BELOW = 1e-5
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; vLLM's seeds are int64 too


def check_sampling(params: SamplingParams) -> None:
    """Refuse (``RequestError``, 400) what sampling cannot run, before a request joins a batch:
    a bad row must fail alone at submission, never inside a step every request shares."""
    problems = []
    t, top_p, seed, max_tokens = params.temperature, params.top_p, params.seed, params.max_tokens
    if not _number(t) or not (math.isfinite(t) and t >= 0):
        problems.append(f"temperature={t!r} must be a finite number >= 0")
    if not _number(top_p) or not 0 < top_p <= 1:
        problems.append(f"top_p={top_p!r} must be a number in (0, 1]")
    if seed is not None and (not _integer(seed) or not 0 <= seed <= MAX_SEED):
        problems.append(f"seed={seed!r} must be an integer in 0..{MAX_SEED} (2**63-1)")
    if not _integer(max_tokens) or max_tokens < 1:
        problems.append(f"max_tokens={max_tokens!r} must be an integer >= 1")
    if problems:
        raise RequestError("Invalid sampling parameters: " + "; ".join(problems))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


def make_generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def sample_next(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """One token from a row of logits: argmax below ``GREEDY_BELOW``, else temperature +
    top-p."""
    if is_greedy(params):
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = cumulative - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=gen)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())


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
        finished: set[int] = set()
        outbox: Outbox = {}
        for i, row in enumerate(rows):
            seq = active[row]
            if seq.cancelled:
                finished.add(row)
                continue
            try:
                chunk = self._next(seq, logits, i, greedy[i], finite[i])
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
        self, seq: Sequence, logits: torch.Tensor, i: int, greedy: int, finite: bool
    ) -> GenerationChunk | None:
        """``seq``'s next token (from row ``i`` of ``logits``) and its chunk."""
        if not finite:
            raise GenerationError(
                "The model's output for this request is not finite (NaN or inf), so no token "
                "can be chosen: its adapter or its prompt drives the model out of range."
            )
        params = seq.request.sampling
        if seq.generated == 0:
            seq.gen = make_generator(params.seed)
        token = greedy if is_greedy(params) else sample_next(logits[i], params, seq.gen)
        seq.generated += 1
        seq.pos += 1
        seq.last_token = token
        return self._chunk(seq, token)

    def _chunk(self, seq: Sequence, token: int) -> GenerationChunk | None:
        """``token``'s chunk for ``seq``, or None while a non-streaming answer is held."""
        reason = None
        # Sent whole, no stop strings: nothing to decode until the end (see below).
        quiet = not seq.request.stream and seq.generated > 1 and not seq.text.stop
        if token in self.eos_ids:
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
        if not seq.request.stream and seq.generated > 1:
            # The whole answer is all it wants: hold tokens after the first (TTFT) and send
            # them at the end, one event-loop wake-up instead of one per token.
            if reason is None:
                seq.held_text += delta
                seq.held_ids.append(token)
                return None
            delta, seq.held_text = seq.held_text + delta, ""
            token_ids, seq.held_ids = [*seq.held_ids, token], []
        else:
            token_ids = [token]
        return GenerationChunk(
            text=delta,
            token_ids=token_ids,
            prompt_tokens=len(seq.prompt_ids),
            completion_tokens=seq.generated,
            finish_reason=reason,
        )
