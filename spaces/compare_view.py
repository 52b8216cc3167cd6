"""What Compare adds to the raw answers: where each departs from the base, and the
expected answer of a shipped example prompt (no Gradio here).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_PATH = Path(__file__).with_name("examples.json")
ADDED, REMOVED = "added", "removed"  # HighlightedText categories (its colour map keys)
_TOKENS = re.compile(r"\s+|[^\s\w]|\w+")


@dataclass(frozen=True)
class Example:
    """A shipped prompt (from the task's test split) and the answer the task expects."""

    prompt: str
    expected: str


def load_examples(path: Path = EXAMPLES_PATH) -> dict[str, list[Example]]:
    """Example prompts per task (the Space cannot read training files once deployed)."""
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return {
        str(task): [Example(str(e["prompt"]), str(e["expected"])) for e in items]
        for task, items in data.items()
    }


def expected_answer(examples: dict[str, list[Example]], prompt: str | None) -> str | None:
    """The expected answer when ``prompt`` is a shipped example (spaces around it ignored)."""
    wanted = (prompt or "").strip()
    for items in examples.values():
        for example in items:
            if example.prompt.strip() == wanted:
                return example.expected
    return None


def word_diff(base: str, text: str) -> list[tuple[str, str | None]]:
    """``text`` against ``base`` as (piece, category) pairs for ``gr.HighlightedText``.

    Pieces ``text`` shares with ``base`` have no category; pieces only in ``text`` are
    "added"; pieces of ``base`` that ``text`` dropped are "removed", shown where they were.
    Words and punctuation are compared separately, so "2003-10-01" against "2003-01-10"
    marks the digits that moved, not the whole date.
    """
    old, new = _TOKENS.findall(base), _TOKENS.findall(text)
    pieces: list[tuple[str, str | None]] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            pieces.append(("".join(new[b0:b1]), None))
            continue
        if a1 > a0:
            pieces.append(("".join(old[a0:a1]), REMOVED))
        if b1 > b0:
            pieces.append(("".join(new[b0:b1]), ADDED))
    return pieces


def changed_share(pieces: list[tuple[str, str | None]]) -> float:
    """The share of the answer's characters that differ from the base's (0 = identical)."""
    total = sum(len(p) for p, c in pieces if c != REMOVED)
    added = sum(len(p) for p, c in pieces if c == ADDED)
    return added / total if total else 0.0
