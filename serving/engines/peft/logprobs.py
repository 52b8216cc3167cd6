"""Logprobs for the PEFT engine: of the model's raw distribution, as vLLM reports by default.

A token's logprob is the log-softmax of the logits the model gave (before logit_bias,
penalties, temperature, top-k/p), so the same token has the same logprob whatever sampling
options a request used, and scoring (lm-eval's log-likelihood) reads the model itself.
"""

from __future__ import annotations

import torch

from loradock.serving.engines.base import TokenLogprob


def token_logprob(logprobs: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """``token``'s entry from one row of log-probabilities, with its ``top`` best."""
    best: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = torch.topk(logprobs, top)
        best = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), best)


def prompt_logprobs(logits: torch.Tensor, ids: list[int], top: int) -> list[TokenLogprob | None]:
    """Every prompt token's entry but the first (nothing predicts it): ``logits[j]`` are the
    model's outputs at prompt position ``j`` (``len(ids)`` rows, or ``len(ids) - 1``)."""
    logprobs = torch.log_softmax(logits[: len(ids) - 1].float(), dim=-1)
    return [None] + [token_logprob(logprobs[j], ids[j + 1], top) for j in range(len(ids) - 1)]
