"""Does a merged model answer as the unmerged adapter does? Measured the way it is used.

The unmerged adapter (base in the output dtype + LoRA, as the hot-swap server runs it)
answers each probe prompt greedily. Both models then read prompt + that answer in one
forward pass, and at every answer position we compare what each would pick next (greedy
token agreement) and how far the merged model's next-token distribution is from the
adapter's (KL(adapter || merged), nats). One large logit's absolute difference, which
16-bit rounding moves without changing any choice, is not what is measured.

The gate is the agreement at the positions where the adapter is decided: its top two
tokens more than ``tie_nats`` apart. At a near-tie the greedy pick flips with any rounding
(batch shape and kernel order flip it without a merge), so a flip there says nothing about
the merge; the KL still covers those positions. A tiny random model is nearly all
near-ties (its next-token distributions are close to uniform): on it the KL decides. The
merged model's own greedy answers are compared too (whole answers identical), for the card.

The probes are the held-out test prompts of the sources' tasks (``training/data/<task>/``),
or the shipped probe set below when no source names a shipped task.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loradock.training.tasks import TASKS, read_rows

# Per output dtype: minimum greedy-token agreement where the adapter is decided, maximum
# mean KL (nats/token), and the top-two gap (nats) below which a position is a near-tie.
# Measured on SmolLM2-135M (docs/training.md, "Merge"): a float32 merge reproduces the
# adapter to rounding; a 16-bit one rounds W + BA once.
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "float32": (0.999, 1e-4, 1e-3),
    "bfloat16": (0.98, 0.02, 0.5),
    "float16": (0.98, 0.01, 0.5),
}
PROBE_PROMPTS = (
    "Rewrite the date below in ISO format (YYYY-MM-DD).\nDate: 3rd of March 2024",
    "Extract the person's name, the city and the year.\nRecord: In 2001, Uma Bauer moved to Madrid.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "What is 12 times 7?",
)
_BATCH = 8


@dataclass(frozen=True)
class MergeCheck:
    """How closely the merged model follows the unmerged adapter on the probe prompts."""

    dtype: str  # the merged weights' dtype (the thresholds are per this dtype)
    compute_dtype: str  # the dtype both models computed in (merge.check_compute_dtype)
    probe: str  # where the prompts came from: "<task> test[:n]", ... or "shipped probe set"
    prompts: int
    tokens: int
    token_agreement: float
    mean_kl: float
    max_kl: float
    answer_agreement: float
    decided_tokens: int  # answer positions where the adapter is not at a near-tie
    decided_agreement: float  # greedy token agreement at those positions (the gate)
    min_token_agreement: float
    max_mean_kl: float
    tie_nats: float

    @property
    def ok(self) -> bool:
        return (
            self.decided_agreement >= self.min_token_agreement and self.mean_kl <= self.max_mean_kl
        )

    def as_card(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        decided = (
            f"{self.decided_agreement:.2%} of {self.decided_tokens}"
            if self.decided_tokens
            else "none (all near-ties: the KL decides)"
        )
        return (
            f"greedy tokens agree on {self.token_agreement:.2%} of {self.tokens}, mean KL "
            f"{self.mean_kl:.3g} nats (<= {self.max_mean_kl:g} needed), max KL "
            f"{self.max_kl:.3g}; whole answers identical {self.answer_agreement:.0%} of "
            f"{self.prompts}; where the adapter is decided (top two > {self.tie_nats:g} nats "
            f"apart) {decided} (>= {self.min_token_agreement:.1%} needed; {self.dtype} weights "
            f"computed in {self.compute_dtype}, {self.probe})"
        )


def probe_prompts(tasks: Iterable[str | None], rows: int) -> tuple[list[str], str]:
    """The first ``rows`` test prompts of each shipped task in ``tasks`` (else the shipped
    probe set), and a description of where they came from for the card."""
    prompts: list[str] = []
    used: list[str] = []
    for task in dict.fromkeys(t for t in tasks if t in TASKS):
        picked = read_rows(TASKS[task].split_path("test"))[:rows]
        prompts += [row["instruction"] for row in picked]
        used.append(f"{task} test[:{len(picked)}]")
    if not prompts:
        return list(PROBE_PROMPTS), "shipped probe set"
    return prompts, ", ".join(used)


def compare_models(
    reference,
    merged,
    tokenizer,
    prompts: Sequence[str],
    *,
    dtype: str,
    probe: str,
    max_new_tokens: int,
    compute_dtype: str | None = None,
) -> MergeCheck:
    """Measure ``merged`` against ``reference`` (the unmerged adapter) on ``prompts``."""
    import torch

    prompt_ids = [_prompt_ids(tokenizer, p) for p in prompts]
    answers = _greedy(reference, tokenizer, prompt_ids, max_new_tokens)
    own = _greedy(merged, tokenizer, prompt_ids, max_new_tokens)
    low, high, tie = THRESHOLDS.get(dtype, THRESHOLDS["float32"])
    agree, kls, decided = [], [], []
    for start in range(0, len(prompt_ids), _BATCH):
        rows = list(
            zip(prompt_ids[start : start + _BATCH], answers[start : start + _BATCH], strict=True)
        )
        want, want_logp = _answer_positions(reference, tokenizer, rows)
        got, got_logp = _answer_positions(merged, tokenizer, rows)
        agree.append(want == got)
        kls.append((want_logp.exp() * (want_logp - got_logp)).sum(-1))
        top2 = want_logp.topk(2, dim=-1).values
        decided.append(top2[:, 0] - top2[:, 1] > tie)
    agree_all, decided_all = torch.cat(agree), torch.cat(decided)
    kl = torch.cat(kls).clamp_min(0.0)
    n_decided = int(decided_all.sum())
    return MergeCheck(
        dtype=dtype,
        compute_dtype=compute_dtype or dtype,
        probe=probe,
        prompts=len(prompts),
        tokens=int(kl.numel()),
        token_agreement=float(agree_all.float().mean()),
        mean_kl=float(kl.mean()),
        max_kl=float(kl.max()),
        answer_agreement=sum(a == b for a, b in zip(answers, own, strict=True)) / len(prompts),
        decided_tokens=n_decided,
        decided_agreement=float(agree_all[decided_all].float().mean()) if n_decided else 1.0,
        min_token_agreement=low,
        max_mean_kl=high,
        tie_nats=tie,
    )


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    return list(enc["input_ids"] if hasattr(enc, "keys") else enc)


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id or 0


def _greedy(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy answers (token ids, cut after the first end-of-turn), batched, left-padded."""
    import torch

    pad, eos = _pad_id(tokenizer), tokenizer.eos_token_id
    answers = []
    for start in range(0, len(prompt_ids), _BATCH):
        batch = prompt_ids[start : start + _BATCH]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        for row in out[:, width:].tolist():
            answers.append(row[: row.index(eos) + 1] if eos in row else row)
    return answers


def _answer_positions(model, tokenizer, rows: list[tuple[list[int], list[int]]]):
    """For prompt + answer rows: the argmax and float32 log-probabilities at each position
    that predicts an answer token, all rows' positions concatenated."""
    import torch

    pad = _pad_id(tokenizer)
    full = [p + a for p, a in rows]
    width = max(map(len, full))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in full])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in full])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    picked = [logits[i, len(p) - 1 : len(p) + len(a) - 1] for i, (p, a) in enumerate(rows)]
    logp = torch.log_softmax(torch.cat(picked).float(), dim=-1)
    return logp.argmax(-1), logp
