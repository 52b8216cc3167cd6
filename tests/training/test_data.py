"""The shipped data sets: deterministic, well-formed, disjoint splits, exact metrics."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from loradock.training import datagen
from loradock.training.tasks import SPLITS, TASKS, get_task, read_rows


@pytest.mark.parametrize("task", sorted(TASKS))
def test_committed_files_match_the_generator(task, tmp_path):
    written = datagen.write(task, out_dir=tmp_path)
    for path in written:
        shipped = get_task(task).data_dir / path.name
        assert path.read_bytes() == shipped.read_bytes(), f"{shipped} is stale: rerun datagen"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_schema_sizes_and_disjointness(task):
    spec = get_task(task)
    seen: dict[str, str] = {}
    for split in SPLITS:
        rows = read_rows(spec.split_path(split))
        assert len(rows) >= (500 if split == "train" else 50)
        for row in rows:
            assert list(row) == ["id", "instruction", "answer"]
            assert all(isinstance(v, str) and v for v in row.values())
            assert row["instruction"] not in seen, (
                f"{row['id']} repeats {seen.get(row['instruction'])}"
            )
            seen[row["instruction"]] = row["id"]
            # The reference answer scores perfectly under the task's own metrics.
            assert all(v == 1.0 for v in spec.score([row["answer"]], [row["answer"]]).values())
    assert (spec.data_dir / "README.md").is_file()


def test_dates_answers_are_valid_iso_dates_matching_the_input():
    for row in read_rows(get_task("dates").split_path("test")):
        date = dt.date.fromisoformat(row["answer"])
        text = row["instruction"].rsplit("Date: ", 1)[1]
        assert str(date.day) in text and (
            str(date.year) in text or f"{date.year % 100:02d}" in text
        )


def test_extraction_answers_have_fixed_key_order():
    for row in read_rows(get_task("extraction").split_path("validation")):
        parsed = json.loads(row["answer"])
        assert list(parsed) == ["name", "city", "year"] and isinstance(parsed["year"], int)
        assert parsed["name"] in row["instruction"] and parsed["city"] in row["instruction"]


ANSWER = '{"name": "Uma Bauer", "city": "Madrid", "year": 2001}'


@pytest.mark.parametrize(
    ("task", "prediction", "answer", "expected"),
    [
        ("dates", "2024-03-03", "2024-03-03", {"exact_match": 1.0}),
        ("dates", "  2024-03-03\n", "2024-03-03", {"exact_match": 1.0}),
        ("dates", "2024-3-3", "2024-03-03", {"exact_match": 0.0}),
        ("dates", "The date is 2024-03-03.", "2024-03-03", {"exact_match": 0.0}),
        ("extraction", ANSWER, ANSWER, {"exact_match": 1.0, "field_accuracy": 1.0}),
        (
            "extraction",
            '{"city": "Madrid", "year": 2001, "name": "Uma Bauer"}',
            ANSWER,
            {"exact_match": 1.0, "field_accuracy": 1.0},
        ),
        (
            "extraction",
            '{"name": "Uma Bauer", "city": "Madrid", "year": "2001"}',
            ANSWER,
            {"exact_match": 0.0, "field_accuracy": 2 / 3},
        ),
        ("extraction", "name: Uma Bauer", ANSWER, {"exact_match": 0.0, "field_accuracy": 0.0}),
        ("extraction", "[1, 2]", ANSWER, {"exact_match": 0.0, "field_accuracy": 0.0}),
        ("extraction", f"Sure! {ANSWER}", ANSWER, {"exact_match": 0.0, "field_accuracy": 0.0}),
    ],
)
def test_metrics(task, prediction, answer, expected):
    assert get_task(task).score([prediction], [answer]) == pytest.approx(expected)


def test_score_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions for 1 answers"):
        get_task("dates").score(["a", "b"], ["a"])


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="dates, extraction"):
        get_task("weather")
