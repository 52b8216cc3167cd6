"""How the index's main queries grow with its size: ``python -m bench.registry``.

Fills one index with synthetic adapter records (deterministic: same seed, same records),
measures the median time of each main query at every size in ``--sizes`` as the index grows,
and reports each query's growth from the smallest to the largest size. The goal from the
registry issue: every query grows less than 2x from 10k to 100k records, which holds only if
each query walks an index and stops at LIMIT instead of scanning.

    python -m bench.registry                      # 10k and 100k, table + bench/results/registry.json
    python -m bench.registry --sizes 200,2000 --json --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loradock.registry.index import Index
from loradock.registry.records import AdapterRecord
from loradock.registry.search_query import SearchQuery

RESULTS = Path(__file__).parent / "results" / "registry.json"
GOAL_GROWTH = 2.0
BATCH = 5_000

BASES = (
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-360M-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-2-2b-it",
    "microsoft/Phi-3.5-mini-instruct",
)
TASKS = (
    "dates", "json", "sql", "summarize", "translate-fr", "translate-de", "classify",
    "extract", "math", "code", "chat", "toxicity", "ner", "qa",
)  # fmt: skip
TAGS = tuple(f"topic-{i}" for i in range(40))
RANKS = (4, 8, 16, 32, 64)
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LICENSES = ("apache-2.0", "mit", "cc-by-4.0", "llama3.2")
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_records(count: int, *, seed: int = 0) -> Iterator[AdapterRecord]:
    """``count`` adapter revisions: most repos have one revision, one in five an older one
    too (so ``is_latest`` filters something); one in ten repos carries ``prod``."""
    rng = random.Random(seed)
    i = 0
    repo = 0
    while i < count:
        org = f"org{repo % 500}"
        repo_id = f"{org}/adapter-{repo}"
        revisions = 2 if repo % 5 == 0 else 1
        for rev in range(revisions):
            if i >= count:
                break
            latest = rev == revisions - 1
            tasks = rng.sample(TASKS, 1 if rng.random() < 0.7 else 2)
            metrics = {f"{t}/exact_match": round(rng.random(), 4) for t in tasks}
            if rng.random() < 0.5:
                metrics[f"{tasks[0]}/f1"] = round(rng.random(), 4)
            when = _T0 + timedelta(minutes=i)
            yield AdapterRecord(
                repo_id=repo_id,
                sha=f"{rng.getrandbits(160):040x}",
                kind="adapter",
                base_model=rng.choice(BASES),
                tasks=tuple(tasks),
                tags=("lora", "peft", *rng.sample(TAGS, rng.randint(1, 3))),
                peft_type="LORA",
                rank=rng.choice(RANKS),
                alpha=float(rng.choice(RANKS) * 2),
                target_modules=tuple(rng.sample(MODULES, rng.randint(2, 7))),
                size_bytes=rng.randint(100_000, 200_000_000),
                license=rng.choice(LICENSES),
                datasets=(f"data/{tasks[0]}",),
                metrics=metrics,
                aliases=(("prod",) if repo % 10 == 0 else ()) if latest else (),
                created_at=when,
                updated_at=when,
                is_latest=latest,
            )
            i += 1
        repo += 1


@dataclass(frozen=True)
class BenchQuery:
    name: str
    run: Callable[[Index, int], Any]  # (index, repetition number) -> result


def _alias_repo(n: int, size: int) -> str:
    # Repos 0, 10, 20, ... carry "prod"; five repos hold six records, and the last few repos
    # may be cut short at this size, so pick among those safely inside.
    repos_present = max(1, size * 5 // 6 - 10)
    repo = (n * 10) % repos_present
    repo -= repo % 10
    return f"org{repo % 500}/adapter-{repo}"


def main_queries(size: int) -> list[BenchQuery]:
    """The registry's main questions; each repetition varies its arguments deterministically."""

    def base(n: int) -> str:
        return BASES[n % len(BASES)]

    def task(n: int) -> str:
        return TASKS[n % len(TASKS)]

    return [
        BenchQuery("by_base", lambda ix, n: ix.search(SearchQuery(base_model=base(n)))),
        BenchQuery("by_task", lambda ix, n: ix.search(SearchQuery(task=task(n)))),
        BenchQuery("by_tag", lambda ix, n: ix.search(SearchQuery(tag=TAGS[n % len(TAGS)]))),
        BenchQuery(
            "best_for_task_on_base_top10",
            lambda ix, n: ix.search(
                SearchQuery(
                    base_model=base(n), task=task(n), sort=f"{task(n)}/exact_match", limit=10
                )
            ),
        ),
        BenchQuery(
            "metric_threshold",
            lambda ix, n: ix.search(SearchQuery(metric=f"{task(n)}/exact_match", min_value=0.9)),
        ),
        BenchQuery("get_by_alias", lambda ix, n: ix.get(_alias_repo(n, size), "prod")),
        BenchQuery("compatible_with", lambda ix, n: ix.compatible_with(base(n), max_rank=16)),
    ]


def _median_ms(index: Index, query: BenchQuery, size: int, reps: int) -> float:
    for n in range(3):  # warm the page cache and SQLite's statement cache
        query.run(index, n)
    times, found = [], 0
    for n in range(reps):
        start = time.perf_counter()
        result = query.run(index, n)
        times.append(time.perf_counter() - start)
        found += bool(result)
    if not found:  # timing a query that never matches would flatter it
        raise AssertionError(f"{query.name} matched nothing in {reps} repetitions at size {size}")
    return statistics.median(times) * 1000


def run_bench(
    sizes: list[int],
    *,
    reps: int = 200,
    seed: int = 0,
    db: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Grow one index through ``sizes`` (ascending), timing every query at each size."""
    sizes = sorted(set(sizes))
    with tempfile.TemporaryDirectory(prefix="loradock-bench-") as tmp:
        path = db or Path(tmp) / "index.sqlite"
        records = synthetic_records(sizes[-1], seed=seed)
        medians: dict[str, dict[str, float]] = {}
        insert_seconds = 0.0
        inserted = 0
        with (
            Index(path) as index,
            Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar,
        ):
            task = bar.add_task("indexing", total=sizes[-1])
            for size in sizes:
                while inserted < size:
                    batch = [next(records) for _ in range(min(BATCH, size - inserted))]
                    start = time.perf_counter()
                    index.upsert_many(batch)
                    insert_seconds += time.perf_counter() - start
                    inserted += len(batch)
                    bar.update(task, completed=inserted)
                for query in main_queries(size):
                    bar.update(task, description=f"{query.name} @ {size}")
                    medians.setdefault(query.name, {})[str(size)] = _median_ms(
                        index, query, size, reps
                    )
            stats = index.stats()
    small, large = str(sizes[0]), str(sizes[-1])
    growth = {name: by_size[large] / by_size[small] for name, by_size in medians.items()}
    return {
        "bench": "registry",
        "sizes": sizes,
        "repetitions": reps,
        "seed": seed,
        "median_ms": medians,
        "growth": growth,
        "goal_growth_below": GOAL_GROWTH,
        "goal_met": all(g < GOAL_GROWTH for g in growth.values()),
        "insert_records_per_second": inserted / insert_seconds if insert_seconds else None,
        "index": {"revisions": stats.revisions, "repos": stats.repos, "metrics": stats.metrics},
        "sqlite": __import__("sqlite3").sqlite_version,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(result: dict[str, Any]) -> None:
    sizes = [str(s) for s in result["sizes"]]
    table = Table(title=f"registry index: median query time (ms), {result['repetitions']} reps")
    table.add_column("query", no_wrap=True)
    for s in sizes:
        table.add_column(f"{int(s):,} records", justify="right")
    table.add_column(f"growth {int(sizes[-1]):,}/{int(sizes[0]):,}", justify="right")
    for name, by_size in result["median_ms"].items():
        growth = result["growth"][name]
        mark = "green" if growth < result["goal_growth_below"] else "red"
        table.add_row(
            name, *[f"{by_size[s]:.3f}" for s in sizes], f"[{mark}]{growth:.2f}x[/{mark}]"
        )
    console = Console()
    console.print(table)
    console.print(
        f"insert: {result['insert_records_per_second']:,.0f} records/s; goal "
        f"(< {result['goal_growth_below']}x each): {'met' if result['goal_met'] else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated record counts")
    parser.add_argument("--reps", type=int, default=200, help="repetitions per query and size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected comma-separated integers like 10000,100000")
    if len(sizes) < 2 or min(sizes) <= 0:
        parser.error(f"--sizes {args.sizes!r}: give at least two positive sizes")
    if args.reps <= 0:
        parser.error(f"--reps {args.reps}: must be positive")
    result = run_bench(sizes, reps=args.reps, seed=args.seed, progress=not args.json)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
        print(f"written: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
