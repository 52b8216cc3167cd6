"""Logprobs for the PEFT engine: of the model's raw distribution, as vLLM reports by default.

A token's logprob is the log-softmax of the logits the model gave (before logit_bias,
penalties, temperature, top-k/p), so the same token has the same logprob whatever sampling
options a request used, and scoring (lm-eval's log-likelihood) reads the model itself.

The rows of a step (or the positions of a prompt) that ask for logprobs share one
log-sum-exp and one top-k (of the most alternatives any of them asked for): a top-k per row
over the vocabulary costs one more call per row and step. The top-k runs on the logits
themselves (log-softmax keeps a row's order) and only the tokens reported are turned into
logprobs (logit minus the row's log-sum-exp), so no vocabulary-sized tensor is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loradock.serving.engines.base import TokenLogprob

Best = tuple[tuple[int, float], ...]  # (token id, logprob), best first


@dataclass
class RowLogprobs:
    """One row's logits, their log-sum-exp, and its best alternatives."""

    logits: torch.Tensor
    lse: float
    best: Best

    def entry(self, token: int, top: int) -> TokenLogprob:
        """``token``'s entry with its ``top`` best alternatives."""
        return TokenLogprob(token, float(self.logits[token]) - self.lse, self.best[:top])


def rows_logprobs(logits: torch.Tensor, rows: list[int], tops: list[int]) -> dict[int, RowLogprobs]:
    """``logits``' ``rows`` as log-probabilities, each with the ``max(tops)`` best alternatives
    (row ``rows[j]``'s entries take the first ``tops[j]`` of them)."""
    if not rows:
        return {}
    # Every row asking (one workload's batch): the step's logits themselves, no copy. The
    # grammar's mask written into them later only lowers tokens it refuses, never the one a
    # row samples, so ``entry`` still reads raw logits.
    picked = (logits if len(rows) == len(logits) else logits[rows]).float()
    lse = torch.logsumexp(picked, dim=-1)
    best = _best(picked, lse, max(tops))
    lses = lse.tolist()
    return {row: RowLogprobs(picked[j], lses[j], best[j]) for j, row in enumerate(rows)}


def prompt_logprobs(logits: torch.Tensor, ids: list[int], top: int) -> list[TokenLogprob | None]:
    """Every prompt token's entry but the first (nothing predicts it): ``logits[j]`` are the
    model's outputs at prompt position ``j`` (``len(ids)`` rows, or ``len(ids) - 1``)."""
    picked = logits[: len(ids) - 1].float()
    lse = torch.logsumexp(picked, dim=-1)
    tokens = ids[1:]
    index = torch.tensor(tokens, dtype=torch.long).unsqueeze(1)
    chosen = (picked.gather(1, index).squeeze(1) - lse).tolist()
    best = _best(picked, lse, top)
    return [None] + [TokenLogprob(*entry) for entry in zip(tokens, chosen, best, strict=True)]


def _best(logits: torch.Tensor, lse: torch.Tensor, top: int) -> list[Best]:
    """Each row's ``top`` best (token, logprob), from one top-k over every row."""
    if not top:
        return [()] * len(logits)
    values, ids = torch.topk(logits, top, dim=-1)
    values = values - lse.unsqueeze(1)
    return [
        tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)
    ]
