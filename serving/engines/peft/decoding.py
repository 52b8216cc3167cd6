"""Per-sequence decoding state: sampling, incremental detokenization and stop strings.

Each sequence in a batch carries its own sampling options and its own seeded generator,
so a request with a ``seed`` gets the same text whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from loradock.serving.engines.base import SamplingParams


def make_generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def sample_next(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """One token from a row of logits: argmax at temperature 0, else temperature + top-p."""
    if params.temperature == 0:
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
