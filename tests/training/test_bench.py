"""Smoke test of bench/training.py at tiny sizes: it runs and writes well-formed results."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_bench_training_small(tmp_path):
    from bench import training as bench

    out = tmp_path / "training.json"
    assert bench.main(["--small", "--repeats", "1", "--rows", "16", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["ratios"]) == {"loradock_vs_bare", "packing_vs_no_packing"}
    assert all(v > 0 for v in results["ratios"].values())
    speeds = results["tokens_per_second"]
    assert all(len(v) == 1 and v[0] > 0 for v in speeds.values())
    memory = results["memory_mb"]
    assert memory["lora_peak_rss"] > 0 and memory["qlora_peak_rss"] > 0
    # NF4 weights take less memory than fp32 ones (timings are never asserted).
    assert memory["qlora_model_footprint"] < memory["lora_model_footprint"]
