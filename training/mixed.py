"""A short, varied-length instruction set, generated from a fixed seed (no download).

Real instruction-tuning data is short on average with a long tail: one-word answers next to
list and batch tasks many times longer. The shipped ``dates`` rows are all ~103 tokens, so an
unpacked batch of them is almost free of padding and packing has nothing to remove. This set is
what :mod:`bench.training` measures packing on (``--data mixed``): the shipped dates and
extraction rows as they are, plus the same two tasks over several inputs at once and short tasks
(arithmetic, spelling, sorting words) whose sizes are drawn from long-tailed (log-normal)
distributions. Rows are ``{"id", "instruction", "answer"}`` like the shipped sets; every answer
is exact and checkable. Lengths with SmolLM2's chat template run from ~40 to ~500 tokens.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from loradock.training.tasks import get_task, read_rows

SEED = 20261128
# (kind, weight): half the rows are single shipped examples, the rest vary in length.
KINDS: tuple[tuple[str, float], ...] = (
    ("dates", 0.25),
    ("extraction", 0.25),
    ("dates_batch", 0.12),
    ("extraction_batch", 0.08),
    ("sort_words", 0.12),
    ("arithmetic", 0.10),
    ("spell", 0.08),
)
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "maple",
    "orbit",
    "lantern",
    "copper",
    "meadow",
    "falcon",
    "harbor",
    "violet",
    "ember",
    "glacier",
    "pepper",
    "quartz",
    "saddle",
    "timber",
    "velvet",
    "willow",
    "anchor",
    "basil",
    "cedar",
    "dune",
    "fjord",
    "garnet",
    "hazel",
    "island",
    "jasper",
    "kettle",
    "lemon",
    "marble",
    "nectar",
    "olive",
    "pebble",
    "quill",
    "raven",
    "sierra",
    "tulip",
    "umber",
    "walnut",
    "yarrow",
    "zephyr",
    "amber",
    "bramble",
    "cobalt",
    "dahlia",
    "echo",
    "fennel",
    "ginger",
    "heron",
    "indigo",
]


def _long_tail(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """A log-normal count (median ``median``), clipped to ``[low, high]``."""
    return max(low, min(high, round(rng.lognormvariate(0, sigma) * median)))


def _shipped(task: str) -> list[dict[str, str]]:
    return read_rows(get_task(task).split_path("train"))


def _field(instruction: str, label: str) -> str:
    """The input line of a shipped row (``Date: ...`` / ``Record: ...``)."""
    return instruction.rsplit(f"\n{label}: ", 1)[1]


class _Maker:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.dates_rows = _shipped("dates")
        self.records = _shipped("extraction")

    def dates(self) -> tuple[str, str]:
        row = self.rng.choice(self.dates_rows)
        return row["instruction"], row["answer"]

    def extraction(self) -> tuple[str, str]:
        row = self.rng.choice(self.records)
        return row["instruction"], row["answer"]

    def dates_batch(self) -> tuple[str, str]:
        rows = self.rng.sample(self.dates_rows, _long_tail(self.rng, 4, 0.7, 2, 24))
        listed = "\n".join(_field(r["instruction"], "Date") for r in rows)
        return (
            "Rewrite each date below in ISO format (YYYY-MM-DD), one per line, in order. "
            "Two-digit years mean 20YY; '(US)' means month first, '(EU)' day first.\n" + listed,
            "\n".join(r["answer"] for r in rows),
        )

    def extraction_batch(self) -> tuple[str, str]:
        rows = self.rng.sample(self.records, _long_tail(self.rng, 3, 0.6, 2, 10))
        listed = "\n".join(f"- {_field(r['instruction'], 'Record')}" for r in rows)
        return (
            "For each record below, extract the person's name, the city and the year. Reply "
            'with a JSON list only, one {"name": "...", "city": "...", "year": 1234} per '
            "record, in order.\n" + listed,
            "[" + ", ".join(r["answer"] for r in rows) + "]",
        )

    def sort_words(self) -> tuple[str, str]:
        words = self.rng.sample(WORDS, _long_tail(self.rng, 8, 0.8, 2, len(WORDS)))
        return (
            "Sort these words alphabetically and reply with them separated by spaces: "
            + " ".join(words),
            " ".join(sorted(words)),
        )

    def arithmetic(self) -> tuple[str, str]:
        a, b = self.rng.randint(2, 999), self.rng.randint(2, 999)
        return f"What is {a} + {b}? Reply with the number only.", str(a + b)

    def spell(self) -> tuple[str, str]:
        word = self.rng.choice(WORDS)
        return f"Write the word '{word}' backwards.", word[::-1]


def mixed_rows(n: int, *, seed: int = SEED) -> list[dict[str, str]]:
    """``n`` rows of the mixed set; the same ``n`` and ``seed`` always give the same rows."""
    rng = random.Random(seed)
    maker = _Maker(rng)
    kinds, weights = zip(*KINDS, strict=True)
    makers: dict[str, Callable[[], tuple[str, str]]] = {k: getattr(maker, k) for k in kinds}
    rows = []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        instruction, answer = makers[kind]()
        rows.append({"id": f"mixed-{i:04d}-{kind}", "instruction": instruction, "answer": answer})
    return rows


def write_mixed(path: str | Path, n: int, *, seed: int = SEED) -> Path:
    """The mixed set as a jsonl file (what a job's ``data.train`` can name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed_rows(n, seed=seed)))
    return path
