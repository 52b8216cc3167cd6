"""``bench/serving.py`` runs end to end at smoke-test sizes and writes its results."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_serving_quick(tmp_path, capsys):
    from bench.serving import main

    assert main(["--quick", "--json", "--only", "b", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "serving-quick.json").read_text())
    assert printed["rows"] == saved["rows"]
    (row,) = saved["rows"]
    assert row["key"] == "b_16_adapters_vs_1" and row["value"] > 0
    assert (tmp_path / "serving_ratios.png").stat().st_size > 0
