"""The report's merge section: a combination of adapters next to each source, on the source's
task, with the share it kept (made-up results, no model runs)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from loradock.evals.report import render_markdown
from loradock.evals.results import EvalTarget, MetricResult, TargetResult
from loradock.evals.run import EvalOptions, EvalRun
from loradock.evals.targets import TargetPlan

SOURCES = [
    {"repo_id": "acme/dates", "revision": "1" * 40, "task": "dates", "weight": 0.5},
    {"repo_id": "acme/extraction", "revision": "2" * 40, "task": "extraction", "weight": 0.5},
]


def _m(task: str, value: float) -> MetricResult:
    return MetricResult(task, "exact_match", value, 0.01, True, f"loradock/{task}", "a", "task", 10)


def _target(repo: str, scores: dict[str, float], card=None) -> TargetResult:
    label = f"{repo}@1234567"
    target = EvalTarget(label, "adapter", label, Path("/x"), repo, "3" * 40, card=card)
    return TargetResult(target, [_m(t, v) for t, v in scores.items()], raw={"results": {}})


def _run(merge: dict | None, evaluated: tuple[str, ...]) -> EvalRun:
    from loradock.evals.taskdir import load_task_specs

    base = _target("acme/base", {"dates": 0.1, "extraction": 0.2})
    sources = {
        "acme/dates": _target("acme/dates", {"dates": 0.8, "extraction": 0.0}),
        "acme/extraction": _target("acme/extraction", {"dates": 0.0, "extraction": 1.0}),
    }
    card = SimpleNamespace(training={"merge": merge} if merge else {})
    combo = _target("acme/combo", {"dates": 0.6, "extraction": 0.9}, card=card)
    results = [base, *(sources[r] for r in evaluated), combo]
    specs = load_task_specs()
    tasks = [specs[n] for n in ("dates", "extraction")]
    return EvalRun(
        plan=TargetPlan(base.target, tuple(r.target for r in results[1:])),
        tasks=tasks,
        results=results,
        options=EvalOptions(),
        task_hashes={s.name: "0" * 64 for s in tasks},
    )


@pytest.mark.parametrize(
    ("merge", "evaluated", "rows"),
    [
        (
            {"sources": SOURCES, "method": "ties", "weights": [0.5, 0.5], "density": 0.5},
            ("acme/dates", "acme/extraction"),
            ["| `acme/dates` | 0.5 | dates | exact\\_match | 0.8000 | 0.6000 | 75% |",
             "| `acme/extraction` | 0.5 | extraction | exact\\_match | 1.0000 | 0.9000 | 90% |"],
        ),
        (  # a source not evaluated in the same run: its score and the share are unknown
            {"sources": SOURCES, "method": "linear", "weights": [0.5, 0.5]},
            ("acme/dates",),
            ["| `acme/dates` | 0.5 | dates | exact\\_match | 0.8000 | 0.6000 | 75% |",
             "| `acme/extraction` | 0.5 | extraction | exact\\_match | - | 0.9000 | - |"],
        ),
        # one adapter merged whole is not a combination; a plain adapter has no record
        ({"sources": SOURCES[:1], "method": "merge_and_unload"}, ("acme/dates",), []),
        (None, ("acme/dates", "acme/extraction"), []),
    ],
)  # fmt: skip
def test_a_combination_is_shown_next_to_its_sources(merge, evaluated, rows):
    text = render_markdown(_run(merge, evaluated), {}, {})
    # only the merge section's rows begin with a repo (the task tables begin with a metric)
    shown = [line for line in text.splitlines() if line.startswith("| `acme/")]
    assert ("what each combination kept" in text) is bool(rows)
    assert shown == rows
