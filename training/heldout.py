"""Held-out evaluation right after training: task metric by greedy generation, and perplexity.

Both run twice on the same model object: with the adapter, and inside ``disable_adapter()``
for the base, so the comparison costs no second model load.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loradock.training.data import EvalExample


@dataclass
class HeldoutResult:
    """Scores of one model on the held-out examples (``metrics`` keyed by metric name)."""

    metrics: dict[str, float] = field(default_factory=dict)
    perplexity: float | None = None
    samples: list[dict[str, str]] = field(default_factory=list)


def _prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def _reply_ids(tokenizer, messages, reference: str) -> tuple[list[int], int]:
    """Token ids of prompt + reply (chat template applied) and where the reply starts."""
    prompt = _prompt_ids(tokenizer, messages)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": reference}], tokenize=True
    )
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    return full, len(prompt)


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


def reply_perplexity(
    model, tokenizer, examples: Sequence[EvalExample], *, batch_size: int
) -> float:
    """exp(mean negative log-likelihood of the reference replies' tokens, end-of-turn included)."""
    import torch

    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(examples), batch_size):
        rows = [
            _reply_ids(tokenizer, ex.messages, ex.reference)
            for ex in examples[start : start + batch_size]
        ]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        labels = input_ids.clone()
        for i, (ids, reply_start) in enumerate(rows):
            labels[i, :reply_start] = -100
            labels[i, len(ids) :] = -100
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    return math.exp(total_nll / max(total_tokens, 1))


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
        result.perplexity = reply_perplexity(model, tokenizer, examples, batch_size=batch_size)
        if task is not None:
            replies = generate_replies(
                model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
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
