"""Logprobs for the PEFT engine: of the model's raw distribution, as vLLM reports by default.

A token's logprob is the log-softmax of the logits the model gave (before logit_bias,
penalties, temperature, top-k/p), so the same token has the same logprob whatever sampling
options a request used, and scoring (lm-eval's log-likelihood) reads the model itself.

The rows of a step (or the positions of a prompt) that ask for logprobs share one
log-softmax and one top-k (of the most alternatives any of them asked for): a top-k per row
over the vocabulary costs one more call per row and step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loradock.serving.engines.base import TokenLogprob

Best = tuple[tuple[int, float], ...]  # (token id, logprob), best first


@dataclass
class RowLogprobs:
    """One row's log-probabilities and its best alternatives."""

    logprobs: torch.Tensor
    best: Best

    def entry(self, token: int, top: int) -> TokenLogprob:
        """``token``'s entry with its ``top`` best alternatives."""
        return TokenLogprob(token, float(self.logprobs[token]), self.best[:top])


def rows_logprobs(logits: torch.Tensor, rows: list[int], tops: list[int]) -> dict[int, RowLogprobs]:
    """``logits``' ``rows`` as log-probabilities, each with the ``max(tops)`` best alternatives
    (row ``rows[j]``'s entries take the first ``tops[j]`` of them)."""
    if not rows:
        return {}
    logprobs = torch.log_softmax(logits[rows].float(), dim=-1)
    best = _best(logprobs, max(tops))
    return {row: RowLogprobs(logprobs[j], best[j]) for j, row in enumerate(rows)}


def prompt_logprobs(logits: torch.Tensor, ids: list[int], top: int) -> list[TokenLogprob | None]:
    """Every prompt token's entry but the first (nothing predicts it): ``logits[j]`` are the
    model's outputs at prompt position ``j`` (``len(ids)`` rows, or ``len(ids) - 1``)."""
    logprobs = torch.log_softmax(logits[: len(ids) - 1].float(), dim=-1)
    tokens = ids[1:]
    index = torch.tensor(tokens, dtype=torch.long).unsqueeze(1)
    chosen = logprobs.gather(1, index).squeeze(1).tolist()
    best = _best(logprobs, top)
    return [None] + [TokenLogprob(*entry) for entry in zip(tokens, chosen, best, strict=True)]


def _best(logprobs: torch.Tensor, top: int) -> list[Best]:
    """Each row's ``top`` best (token, logprob), from one top-k over every row."""
    if not top:
        return [()] * len(logprobs)
    values, ids = torch.topk(logprobs, top, dim=-1)
    return [
        tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)
    ]
