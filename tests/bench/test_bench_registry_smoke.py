"""bench.registry runs end to end at tiny sizes (timings are reported, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_registry_runs_and_writes_its_results(tmp_path):
    out = tmp_path / "registry.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.registry", "--sizes", "200,2000", "--reps", "5"]
        + ["--json", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    written = json.loads(out.read_text())
    assert printed == written
    assert written["sizes"] == [200, 2000]
    assert written["index"]["revisions"] == 2000
    queries = {
        "by_base",
        "by_task",
        "by_tag",
        "best_for_task_on_base_top10",
        "metric_threshold",
        "get_by_alias",
        "compatible_with",
    }
    assert set(written["median_ms"]) == queries == set(written["growth"])
    for by_size in written["median_ms"].values():
        assert set(by_size) == {"200", "2000"} and all(v > 0 for v in by_size.values())


def test_bench_registry_refuses_bad_sizes():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.registry", "--sizes", "ten,20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "'ten,20'" in proc.stderr


def test_synthetic_records_are_deterministic(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.registry import synthetic_records

    first = list(synthetic_records(50, seed=3))
    assert first == list(synthetic_records(50, seed=3))
    assert first != list(synthetic_records(50, seed=4))
    assert sum(r.is_latest for r in first) < 50  # some repos have an older revision
