"""Generate the two shipped task data sets deterministically (fixed seed, no download).

Run ``python -m loradock.training.datagen`` to rewrite ``training/data/<task>/*.jsonl``; the
files are committed, and a test checks that regenerating gives the same bytes.

Rows follow the fixed schema evals relies on: ``{"id", "instruction", "answer"}`` where
``instruction`` is the whole user message and ``answer`` the exact expected reply.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 20241103
DATA_DIR = Path(__file__).parent / "data"
SPLIT_SIZES = {"train": 1000, "validation": 100, "test": 200}

# ---------------------------------------------------------------- dates

DATES_INSTRUCTION = (
    "Rewrite the date below in ISO format (YYYY-MM-DD). "
    "Two-digit years mean 20YY; '(US)' means month first, '(EU)' day first. "
    "Reply with the date only.\nDate: "
)
MONTHS = list(calendar.month_name)[1:]
MONTHS_ABBR = list(calendar.month_abbr)[1:]


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each format renders a date; ``two_digit`` ones only get years 2000-2039 (read as 20YY).
DateFormat = Callable[[dt.date], str]
DATE_FORMATS: list[tuple[str, DateFormat, bool]] = [
    ("ordinal-of", lambda d: f"{ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}", False),
    ("the-ordinal-of", lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}", False),
    ("month-day-year", lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}", False),
    ("month-day-yy", lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year % 100:02d}", True),
    ("abbr-day-year", lambda d: f"{MONTHS_ABBR[d.month - 1]} {d.day} {d.year}", False),
    ("day-month-year", lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}", False),
    ("us-slash-yy", lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d} (US)", True),
    ("us-slash", lambda d: f"{d.month}/{d.day}/{d.year} (US)", False),
    ("eu-slash", lambda d: f"{d.day:02d}/{d.month:02d}/{d.year} (EU)", False),
    ("eu-dot-yy", lambda d: f"{d.day}.{d.month}.{d.year % 100:02d} (EU)", True),
    ("dotted-iso", lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}", False),
    ("compact", lambda d: f"{d.year}{d.month:02d}{d.day:02d}", False),
    ("day-abbr-year", lambda d: f"{d.day}-{MONTHS_ABBR[d.month - 1]}-{d.year}", False),
    (
        "weekday-long",
        lambda d: f"{calendar.day_name[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
        False,
    ),
    (
        "ordinal-apostrophe",
        lambda d: f"{MONTHS[d.month - 1]} {ordinal(d.day)}, '{d.year % 100:02d}",
        True,
    ),
]


def _random_date(rng: random.Random, two_digit: bool) -> dt.date:
    lo, hi = (
        (dt.date(2000, 1, 1), dt.date(2039, 12, 31))
        if two_digit
        else (
            dt.date(1950, 1, 1),
            dt.date(2049, 12, 31),
        )
    )
    return lo + dt.timedelta(days=rng.randrange((hi - lo).days + 1))


def _date_rows(rng: random.Random) -> Iterator[dict[str, str]]:
    while True:
        _, render, two_digit = rng.choice(DATE_FORMATS)
        date = _random_date(rng, two_digit)
        yield {"instruction": DATES_INSTRUCTION + render(date), "answer": date.isoformat()}


# ---------------------------------------------------------------- extraction

EXTRACTION_INSTRUCTION = (
    "Extract the person's name, the city and the year from the record below. "
    'Reply with JSON only, exactly in the form {"name": "...", "city": "...", "year": 1234}.'
    "\nRecord: "
)
FIRST_NAMES = [
    "Ada", "Amara", "Bruno", "Chen", "Dmitri", "Elena", "Farah", "Gustav", "Hana", "Ibrahim",
    "Ines", "Jonas", "Keiko", "Lars", "Leila", "Marco", "Maria", "Nadia", "Omar", "Priya",
    "Quentin", "Rosa", "Sanjay", "Sofia", "Tomas", "Uma", "Viktor", "Wei", "Yara", "Zoltan",
]  # fmt: skip
LAST_NAMES = [
    "Alvarez", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn",
    "Rossi", "Schmidt", "Tanaka", "Urquhart", "Varga", "Weber", "Xu", "Yilmaz", "Zhang",
]  # fmt: skip
CITIES = [
    "Amsterdam", "Athens", "Bogota", "Cairo", "Dublin", "Edinburgh", "Florence", "Geneva",
    "Hanoi", "Istanbul", "Jakarta", "Kyoto", "Lagos", "Lisbon", "Madrid", "Montreal", "Nairobi",
    "Oslo", "Porto", "Quito", "Riga", "Seoul", "Tallinn", "Utrecht", "Valencia", "Warsaw",
    "Zagreb", "Buenos Aires", "New Delhi", "San Diego",
]  # fmt: skip
JOBS = ["nurse", "pilot", "teacher", "chemist", "architect", "baker", "violinist", "engineer"]

# Templates put the three fields in different orders and next to distractors (a job, an age,
# a second number), so copying the first capitalised words or the first number fails.
EXTRACTION_TEMPLATES = [
    "{name} was born in {city} in {year} and now works as a {job}.",
    "In {year}, {name} moved to {city} to start a job as a {job}.",
    "{city}, {year}: {name}, a {job} with {n} years of experience, opened a studio.",
    "Registered {year} | {job} | {name} | office in {city}",
    "The {job} {name} (room {n}) has lived in {city} since {year}.",
    "{name}, {job}. Joined the {city} branch in {year}; badge number {n}.",
    "Our new {job} arrived from {city} in {year}: welcome, {name}!",
    "Since {year} the {city} team has been led by {name}, who trained as a {job}.",
]


def _extraction_rows(rng: random.Random) -> Iterator[dict[str, str]]:
    while True:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        city = rng.choice(CITIES)
        year = rng.randint(1960, 2024)
        record = rng.choice(EXTRACTION_TEMPLATES).format(
            name=name, city=city, year=year, job=rng.choice(JOBS), n=rng.randint(2, 99)
        )
        answer = json.dumps({"name": name, "city": city, "year": year}, ensure_ascii=False)
        yield {"instruction": EXTRACTION_INSTRUCTION + record, "answer": answer}


GENERATORS: dict[str, Callable[[random.Random], Iterator[dict[str, str]]]] = {
    "dates": _date_rows,
    "extraction": _extraction_rows,
}


def generate(task: str, *, seed: int = SEED) -> dict[str, list[dict[str, str]]]:
    """All splits of ``task``; no instruction appears twice, so the splits are disjoint."""
    rng = random.Random(f"{task}:{seed}")
    rows = GENERATORS[task](rng)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, size in SPLIT_SIZES.items():
        out: list[dict[str, str]] = []
        while len(out) < size:
            row = next(rows)
            if row["instruction"] in seen:
                continue
            seen.add(row["instruction"])
            out.append({"id": f"{task}-{split}-{len(out):04d}", **row})
        splits[split] = out
    return splits


def write(task: str, out_dir: Path = DATA_DIR) -> list[Path]:
    folder = out_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in generate(task).items():
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        written.append(path)
    return written


def main() -> None:
    for task in GENERATORS:
        for path in write(task):
            print(path)


if __name__ == "__main__":
    main()
