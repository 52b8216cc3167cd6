"""Smoke test of bench/training.py at tiny sizes: it runs and writes well-formed results."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_bench_training_small(tmp_path):
    from bench import training as bench

    out = tmp_path / "training.json"
    argv = ["--small", "--repeats", "1", "--rows", "12", "--threads", "1", "--preload"]
    argv += ["--out", str(out)]
    assert bench.main(argv) == 0
    results = json.loads(out.read_text())
    assert set(results["ratios"]) == {
        "loradock_vs_bare",
        "packing_vs_no_packing",
        "packing_vs_no_packing_dates",
    }
    assert all(v > 0 for v in results["ratios"].values())
    for data in ("mixed", "dates"):
        figures = results["packing"][data]
        packed, unpacked = figures["packed"], figures["unpacked"]
        # Same rows, one epoch: the same real tokens; only the unpacked side computes padding.
        assert packed["real_tokens"] == unpacked["real_tokens"] > 0
        assert packed["computed_tokens"] == packed["real_tokens"]
        assert unpacked["computed_tokens"] >= unpacked["real_tokens"]
        assert packed["steps"] <= unpacked["steps"]
        assert len(packed["tokens_per_second"]) == 1 and packed["tokens_per_second"][0] > 0
        assert results["default_packing"][data]["padding_fraction"] is not None
    # Varied lengths waste more on padding than the uniform dates rows.
    assert (
        results["packing"]["mixed"]["unpacked"]["padding_fraction"]
        > results["packing"]["dates"]["unpacked"]["padding_fraction"]
    )
    memory = results["memory_mb"]
    assert memory["lora_peak_rss"] > 0 and memory["qlora_peak_rss"] > 0
    # NF4 weights take less memory than fp32 ones (timings are never asserted).
    assert memory["qlora_model_footprint"] < memory["lora_model_footprint"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"small": True}, "tiny"),
        ({"shape": "smollm2"}, "shape smollm2"),  # the default: a shape of bench/model_shapes
        ({"shape": "llama-1b"}, "shape llama-1b"),
    ],
)
def test_bench_training_base_by_shape(tmp_path, monkeypatch, options, expected):
    from bench import training as bench

    seen = []

    def build_base(shape, dest):
        seen.append(shape)
        return dest, f"shape {shape}"

    monkeypatch.setattr(bench, "build_base", build_base)
    monkeypatch.setattr("loradock.tiny.make_tiny_base", lambda dest, **kw: dest)
    args = {"small": False, "base": None, "tmp": tmp_path, **options}
    path, model = bench.resolve_base(**args)
    assert model.startswith(expected)
    assert seen == ([] if options.get("small") else [options["shape"]])
