"""What Compare adds: departures from the base's answer, expected answers of examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loradock.spaces.compare_view import (
    ADDED,
    REMOVED,
    changed_share,
    expected_answer,
    load_examples,
    word_diff,
)

DATA = Path(__file__).resolve().parents[2] / "training" / "data"


@pytest.mark.parametrize(
    ("base", "text", "pieces"),
    [
        ("2003-10-01", "2003-10-01", [("2003-10-01", None)]),
        ("2003-10-02", "2003-10-01", [("2003-10-", None), ("02", REMOVED), ("01", ADDED)]),
        (
            "The date is Oct 1",
            "2003-10-01",
            [("The date is Oct 1", REMOVED), ("2003-10-01", ADDED)],
        ),
        ("", "new text", [("new text", ADDED)]),
        ("old", "", [("old", REMOVED)]),
    ],
)
def test_word_diff_marks_what_departs_from_the_base(base, text, pieces):
    assert word_diff(base, text) == pieces
    kept = "".join(p for p, c in word_diff(base, text) if c != REMOVED)
    assert kept == text  # the answer itself reads unchanged, marks aside


@pytest.mark.parametrize(
    ("base", "text", "share"),
    [("a b", "a b", 0.0), ("a", "b", 1.0), ("x y", "x z", 1 / 3)],
)
def test_changed_share(base, text, share):
    assert changed_share(word_diff(base, text)) == pytest.approx(share)


def test_shipped_examples_carry_the_test_split_answers():
    examples = load_examples()
    assert {"dates", "extraction"} <= set(examples)
    for task, items in examples.items():
        answers = {}
        for line in (DATA / task / "test.jsonl").read_text().splitlines():
            row = json.loads(line)
            answers[row["instruction"]] = row["answer"]
        assert items and all(answers[e.prompt] == e.expected for e in items)


@pytest.mark.parametrize(
    ("prompt", "found"),
    [("first", "1"), ("  second\n", "2"), ("third", None), ("", None), (None, None)],
)
def test_expected_answer_only_for_a_shipped_prompt(prompt, found):
    from loradock.spaces.compare_view import Example

    examples = {"t": [Example("first", "1"), Example("second", "2")]}
    assert expected_answer(examples, prompt) == found
