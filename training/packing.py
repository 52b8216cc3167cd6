"""``packing: auto`` decided from the data: pack when unpacked batches would carry much padding.

An unpacked batch is padded to its longest row, so the work spent on padding depends on how
much the row lengths vary within a batch, at the job's batch size, as the random sampler draws
the rows. Packing (bfd, padding-free, attention per packed example: :mod:`packed_attention`)
removes that padding. On an accelerator small batches leave the device idle too, so packing
always pays there; on a CPU the cost per computed token is flat, so packing pays in proportion
to the padding it removes and costs fewer, bigger optimizer steps; see :data:`PADDING_THRESHOLD`
for the cut-off and the measurements it comes from.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Pack on a CPU when unpacked batches would be more than this share padding. Measured in the
# bench (SmolLM2, CPU, batch 8, bench/results/training.json): packed tokens/s = r / (1 - padding)
# x unpacked, with r (packed over unpacked speed per computed token) 0.97 on the mixed set and
# 1.03 on the uniform dates rows, since trl's LM head runs in CPU-sized tiles
# (lm_head_tiles.py; it was 0.67 before, with trl's GPU-sized tiles). So packing pays from ~3%
# padding on; but it also means fewer, bigger optimizer steps (a quarter as many on the mixed
# set), so pack only where it gains at least ~8% at the worst r: 0.97 / (1 - 0.10) = 1.08.
# The shipped dates and extraction rows (3% and 4% padding at batch 8) stay unpacked.
PADDING_THRESHOLD = 0.10
# Lengths are read from at most this many rows (a seeded sample): the estimate needs the
# length distribution, not every row.
MAX_ROWS_MEASURED = 2000
SHUFFLES = 8


@dataclass(frozen=True)
class PackingDecision:
    """What ``packing`` resolved to for one job, and the numbers it was decided on."""

    packing: bool
    setting: bool | str
    device: str
    batch_size: int
    padding_fraction: float | None  # expected share of unpacked batches that is padding
    rows_measured: int = 0
    threshold: float = PADDING_THRESHOLD

    @property
    def reason(self) -> str:
        if self.setting != "auto":
            return f"set to {str(self.setting).lower()} in the job"
        if self.device != "cpu":
            return f"auto: always on a {self.device} (small batches leave it underused)"
        side = ">" if self.packing else "<="
        return f"auto on a CPU: {side} {self.threshold:.0%} threshold"

    def message(self) -> str:
        """One log line: ``packing: on, unpacked batches would be 41% padding (...)``."""
        state = "on" if self.packing else "off"
        if self.padding_fraction is None:
            return f"packing: {state} ({self.reason})"
        return (
            f"packing: {state}, unpacked batches would be {self.padding_fraction:.0%} padding "
            f"(batch {self.batch_size}, {self.rows_measured} rows measured; {self.reason})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "packing": self.packing,
            "setting": self.setting,
            "device": self.device,
            "batch_size": self.batch_size,
            "padding_fraction": self.padding_fraction,
            "rows_measured": self.rows_measured,
            "threshold": self.threshold,
        }


def expected_padding_fraction(
    lengths: Sequence[int], batch_size: int, *, shuffles: int = SHUFFLES, seed: int = 0
) -> float:
    """Share of the tokens computed by unpacked batches that is padding.

    Batches are drawn as the trainer's random sampler draws them (a shuffle cut into batches,
    the last one possibly short), each padded to its longest row; averaged over ``shuffles``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    if not lengths:
        return 0.0
    rng = random.Random(seed)
    order = list(lengths)
    real = computed = 0
    for _ in range(shuffles):
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            real += sum(batch)
            computed += len(batch) * max(batch)
    return 1.0 - real / computed if computed else 0.0


def token_lengths(
    rows: Any, tokenizer: Any, *, max_length: int, limit: int = MAX_ROWS_MEASURED, seed: int = 0
) -> list[int]:
    """Tokens per training row as trl will see them (chat template applied; cut at
    ``max_length``, as unpacked rows are), from at most ``limit`` rows."""
    indices = list(range(len(rows)))
    if len(indices) > limit:
        indices = sorted(random.Random(seed).sample(indices, limit))
    lengths = []
    for i in indices:
        lengths.append(min(_row_tokens(rows[i], tokenizer), max_length))
    return lengths


def _row_tokens(row: dict[str, Any], tokenizer: Any) -> int:
    if "messages" in row:
        return _chat_tokens(row["messages"], tokenizer)
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return len(tokenizer(prompt + completion)["input_ids"]) + 1  # + EOS
        return _chat_tokens(list(prompt) + list(completion), tokenizer)
    return len(tokenizer(row["text"])["input_ids"]) + 1


def _chat_tokens(messages: list[dict[str, Any]], tokenizer: Any) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    return len(ids)


def decide_packing(
    setting: bool | str,
    device: str,
    lengths: Sequence[int] | None,
    batch_size: int,
    *,
    threshold: float = PADDING_THRESHOLD,
) -> PackingDecision:
    """Resolve ``trainer.packing`` (true, false or ``auto``) for this device and data."""
    padding = expected_padding_fraction(lengths, batch_size) if lengths else None
    if setting == "auto":
        packing = device != "cpu" or (padding is not None and padding > threshold)
    else:
        packing = bool(setting)
    return PackingDecision(
        packing=packing,
        setting=setting,
        device=device,
        batch_size=batch_size,
        padding_fraction=padding,
        rows_measured=len(lengths or ()),
        threshold=threshold,
    )


def decide_for_rows(
    setting: bool | str, device: str, rows: Any, tokenizer: Any, *, batch_size: int, max_length: int
) -> PackingDecision:
    """:func:`decide_packing` on a trl-shaped data set; logs the decision with its numbers."""
    lengths = token_lengths(rows, tokenizer, max_length=max_length)
    decision = decide_packing(setting, device, lengths, batch_size)
    log.info(decision.message())
    return decision
