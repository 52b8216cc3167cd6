"""Sampling for the PEFT engine: the checks up front, the logit processors and the sampler.

Per row, in vLLM's order: ``logit_bias`` and ``min_tokens`` (EOS and stop tokens masked), then
the repetition / presence / frequency penalties, then greedy argmax, or temperature, top-k,
min-p and top-p before drawing from the row's own seeded generator. A row that asks for none
of the processors is left to the output stage's one vectorised argmax (greedy) or the sampler
alone, so a batch of plain rows pays nothing for the others.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch

from loradock.errors import RequestError
from loradock.serving.engines.base import (
    MAX_LOGIT_BIAS,
    MAX_SEED,
    MAX_STOP_TOKEN_IDS,
    MAX_TOP_LOGPROBS,
    SamplingParams,
)

# Below this temperature sampling is greedy: logits / 1e-40 overflow to inf, and the softmax
# of a row with inf in it is NaN. At 1e-5 a gap of 0.001 between the two best logits already
# gives the runner-up e**-100 of the best's probability: greedy in all but name.
GREEDY_BELOW = 1e-5
MAX_BIAS = 100.0  # OpenAI's bound on one logit_bias value


def check_sampling(params: SamplingParams) -> None:
    """Refuse (``RequestError``, 400) what sampling cannot run, before a request joins a batch:
    a bad row must fail alone at submission, never inside a step every request shares."""
    p = params
    problems = [
        *_range("temperature", p.temperature, 0, math.inf),
        *_range("min_p", p.min_p, 0, 1),
        *_range("presence_penalty", p.presence_penalty, -2, 2),
        *_range("frequency_penalty", p.frequency_penalty, -2, 2),
    ]
    if not _number(p.top_p) or not 0 < p.top_p <= 1:
        problems.append(f"top_p={p.top_p!r} must be a number in (0, 1]")
    rep = p.repetition_penalty
    if not _number(rep) or not (math.isfinite(rep) and rep > 0):
        problems.append(f"repetition_penalty={rep!r} must be a finite number > 0")
    if p.seed is not None and (not _integer(p.seed) or not 0 <= p.seed <= MAX_SEED):
        problems.append(f"seed={p.seed!r} must be an integer in 0..{MAX_SEED} (2**63-1)")
    if not _integer(p.max_tokens) or p.max_tokens < 1:
        problems.append(f"max_tokens={p.max_tokens!r} must be an integer >= 1")
    elif not _integer(p.min_tokens) or not 0 <= p.min_tokens <= p.max_tokens:
        problems.append(f"min_tokens={p.min_tokens!r} must be an integer in 0..max_tokens")
    if not _integer(p.top_k) or p.top_k < 0:
        problems.append(f"top_k={p.top_k!r} must be 0 (every token) or a positive integer")
    for name in ("logprobs", "prompt_logprobs"):
        value = getattr(p, name)
        if value is not None and (not _integer(value) or not 0 <= value <= MAX_TOP_LOGPROBS):
            problems.append(f"{name}={value!r} must be an integer in 0..{MAX_TOP_LOGPROBS}")
    problems += _token_problems(p)
    if problems:
        raise RequestError("Invalid sampling parameters: " + "; ".join(problems))


def _token_problems(p: SamplingParams) -> list[str]:
    problems = []
    if len(p.logit_bias) > MAX_LOGIT_BIAS:
        problems.append(f"logit_bias has {len(p.logit_bias)} entries: at most {MAX_LOGIT_BIAS}")
    for token, bias in p.logit_bias:
        if not _integer(token) or token < 0:
            problems.append(f"logit_bias token {token!r} must be a token id >= 0")
        if not _number(bias) or not -MAX_BIAS <= bias <= MAX_BIAS:
            problems.append(f"logit_bias[{token}]={bias!r} must be in [-100, 100]")
    if len(p.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        problems.append(f"stop_token_ids: at most {MAX_STOP_TOKEN_IDS} ids")
    if any(not _integer(t) or t < 0 for t in p.stop_token_ids):
        problems.append(f"stop_token_ids={list(p.stop_token_ids)!r} must be token ids >= 0")
    return problems


def _range(name: str, value: object, low: float, high: float) -> list[str]:
    if _number(value) and math.isfinite(value) and low <= value <= high:
        return []
    bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
    return [f"{name}={value!r} must be a finite number {bounds}"]


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


def adjust_logits(
    logits: torch.Tensor,
    params: SamplingParams,
    *,
    prompt_ids: list[int],
    output_ids: list[int],
    end_ids: Collection[int],
) -> torch.Tensor:
    """A copy of one row's logits with ``params``' processors applied (vLLM's order)."""
    row = logits.float().clone()
    vocab = row.shape[-1]
    if params.logit_bias:
        ids = torch.tensor([t for t, _ in params.logit_bias], dtype=torch.long)
        _check_ids(ids, vocab, "logit_bias")
        row.index_add_(0, ids, torch.tensor([b for _, b in params.logit_bias]))
    if len(output_ids) < params.min_tokens:
        ends = [t for t in {*end_ids, *params.stop_token_ids} if t < vocab]
        row[ends] = -math.inf
    if params.repetition_penalty != 1.0:
        seen = torch.tensor([*prompt_ids, *output_ids], dtype=torch.long).unique()
        values = row[seen]
        penalty = params.repetition_penalty
        row[seen] = torch.where(values > 0, values / penalty, values * penalty)
    if (params.presence_penalty or params.frequency_penalty) and output_ids:
        ids, counts = torch.tensor(output_ids, dtype=torch.long).unique(return_counts=True)
        row[ids] -= params.frequency_penalty * counts + params.presence_penalty
    return row


def _check_ids(ids: torch.Tensor, vocab: int, field: str) -> None:
    if int(ids.max()) >= vocab:
        raise RequestError(f"{field} names token id {int(ids.max())}: the vocabulary has {vocab}")


def sample_next(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """One token from a row of logits: argmax below ``GREEDY_BELOW``, else temperature, then
    top-k, min-p and top-p."""
    if is_greedy(params):
        return int(torch.argmax(logits).item())
    scaled = logits.float() / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    probs = torch.softmax(scaled, dim=-1)
    if params.min_p > 0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
        probs = probs / probs.sum()
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        keep = cumulative - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=gen)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())
