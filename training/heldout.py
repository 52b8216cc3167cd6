"""Held-out evaluation right after training: task metric by greedy generation, and perplexity.

Both run twice on the same model object: with the adapter, and inside ``disable_adapter()``
for the base, so the comparison costs no second model load.

One teacher-forced pass over prompt + reference reply gives the perplexity (the LM head runs
on the reply positions only) and the model's greedy token at every reply position. A row whose
greedy tokens follow the reference through the end of turn (or for ``max_new_tokens`` tokens)
takes the reference as its reply without generating: greedy generation would emit exactly
those tokens (:mod:`loradock.training.heldout_draft`), so the replies equal plain greedy
generation up to floating-point ties between near-equal logits. Only the other rows are
generated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loradock.training.data import EvalExample
from loradock.training.heldout_draft import accepted_drafts


@dataclass
class HeldoutResult:
    """Scores of one model on the held-out examples (``metrics`` keyed by metric name)."""

    metrics: dict[str, float] = field(default_factory=dict)
    perplexity: float | None = None
    samples: list[dict[str, str]] = field(default_factory=list)


def _prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def _reply_ids(tokenizer, messages, reference: str) -> tuple[list[int], int, bool]:
    """Token ids of prompt + reply (chat template applied), where the reply starts, and whether
    they start with the prompt's own ids (what ``generate`` continues)."""
    prompt = _prompt_ids(tokenizer, messages)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": reference}], tokenize=True
    )
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    return full, len(prompt), full[: len(prompt)] == prompt


def generate_replies(
    model, tokenizer, examples: Sequence[EvalExample], *, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy replies, batched with left padding so every prompt ends where generation starts."""
    import torch

    device = next(model.parameters()).device
    replies: list[str] = []
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    for start in range(0, len(examples), batch_size):
        batch = [_prompt_ids(tokenizer, ex.messages) for ex in examples[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                use_cache=True,
            )
        for row in out[:, width:]:
            replies.append(tokenizer.decode(row, skip_special_tokens=True))
    return replies


@dataclass
class ReplyScores:
    """One teacher-forced pass over prompt + reference reply, per held-out row.

    ``replies[i]``: the reply's tokens as the chat template writes them after the prompt
    (reference, end of turn...); empty when the template's tokens do not start with the prompt's
    own (the reference then continues no prompt ``generate`` sees). ``greedy[i][k]``: the
    model's argmax at the position that predicts ``replies[i][k]``.
    """

    perplexity: float
    replies: list[list[int]]
    greedy: list[list[int]]


def _score_batch(model, rows: list[tuple[list[int], int]], pad_id: int):
    """Summed reply NLL, reply token count and per-row greedy reply tokens of one batch.

    Right padded, so the reply positions of every row lie in the last ``width - first + 1``
    positions (``first``: the earliest reply start); ``logits_to_keep`` runs the LM head on
    those only.
    """
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in rows)
    first = min(start for _, start in rows)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    targets = torch.full((len(rows), width - first), -100)
    for i, (ids, start) in enumerate(rows):
        targets[i, start - first : len(ids) - first] = torch.tensor(ids[start:])
    with torch.no_grad():
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            logits_to_keep=width - first + 1,
        )
    # logits[:, j] is at position first - 1 + j: it predicts the token at first + j.
    logits = out.logits[:, :-1].float()
    targets = targets.to(device)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    argmax = logits.argmax(dim=-1).cpu()
    greedy = [
        argmax[i, start - first : len(ids) - first].tolist() for i, (ids, start) in enumerate(rows)
    ]
    return float(nll), int((targets != -100).sum()), greedy


def score_replies(
    model, tokenizer, examples: Sequence[EvalExample], *, batch_size: int
) -> ReplyScores:
    """The reference replies' perplexity and the model's greedy tokens along them."""
    total_nll, total_tokens = 0.0, 0
    replies: list[list[int]] = []
    greedy: list[list[int]] = []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(examples), batch_size):
        rows = [
            _reply_ids(tokenizer, ex.messages, ex.reference)
            for ex in examples[start : start + batch_size]
        ]
        nll, tokens, batch_greedy = _score_batch(model, [row[:2] for row in rows], pad_id)
        total_nll, total_tokens = total_nll + nll, total_tokens + tokens
        greedy.extend(batch_greedy)
        replies.extend(ids[reply_start:] if aligned else [] for ids, reply_start, aligned in rows)
    return ReplyScores(math.exp(total_nll / max(total_tokens, 1)), replies, greedy)


def greedy_replies(
    model,
    tokenizer,
    examples: Sequence[EvalExample],
    scores: ReplyScores,
    *,
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """What :func:`generate_replies` returns, generating only the rows whose reference is no
    accepted draft (:mod:`loradock.training.heldout_draft`)."""
    drafts = accepted_drafts(
        model.generation_config, scores.replies, scores.greedy, max_new_tokens=max_new_tokens
    )
    todo = [i for i, tokens in enumerate(drafts) if tokens is None]
    generated = generate_replies(
        model,
        tokenizer,
        [examples[i] for i in todo],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    replies = [
        tokenizer.decode(tokens, skip_special_tokens=True) if tokens is not None else ""
        for tokens in drafts
    ]
    for i, reply in zip(todo, generated, strict=True):
        replies[i] = reply
    return replies


def evaluate_model(
    model,
    tokenizer,
    examples: Sequence[EvalExample],
    *,
    task: Any = None,
    max_new_tokens: int = 40,
    batch_size: int = 16,
    keep_samples: int = 5,
) -> HeldoutResult:
    """Task metrics (when ``task`` is a ``TaskSpec``) and reply perplexity of ``model``."""
    result = HeldoutResult()
    if not examples:
        return result
    was_training = model.training
    model.eval()
    try:
        scores = score_replies(model, tokenizer, examples, batch_size=batch_size)
        result.perplexity = scores.perplexity
        if task is not None:
            replies = greedy_replies(
                model,
                tokenizer,
                examples,
                scores,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
            result.metrics = task.score(replies, [ex.reference for ex in examples])
            result.samples = [
                {"prompt": ex.messages[-1]["content"], "reference": ex.reference, "reply": r}
                for ex, r in list(zip(examples, replies, strict=True))[:keep_samples]
            ]
    finally:
        model.train(was_training)
    return result


def evaluate_base_and_adapter(
    peft_model, tokenizer, examples: Sequence[EvalExample], **kwargs
) -> dict[str, HeldoutResult]:
    """The same evaluation with the adapter switched off (``base``) and on (``adapter``)."""
    disable = getattr(peft_model, "disable_adapter", None)
    ctx = disable() if disable is not None else contextlib.nullcontext()
    with ctx:
        base = evaluate_model(peft_model, tokenizer, examples, **kwargs)
    adapter = evaluate_model(peft_model, tokenizer, examples, **kwargs)
    return {"base": base, "adapter": adapter}
