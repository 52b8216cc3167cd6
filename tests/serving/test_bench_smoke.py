"""``bench/serving.py`` runs end to end at smoke-test sizes and writes its results; its device
options fail early and clearly where the device is missing."""

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
    assert (saved["device"], saved["dtype"], saved["gpu"]) == ("cpu", "float32", None)
    (row,) = saved["rows"]
    assert row["key"] == "b_16_adapters_vs_1" and row["value"] > 0
    assert (tmp_path / "serving_ratios.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # No GPU: one error naming the value and the way out, before any work.
        (["--device", "cuda"], ["--device 'cuda' needs a CUDA GPU", "use --device cpu"]),
        (["--device", "cuda", "--dtype", "float16"], ["'cuda'", "use --device cpu"]),
        (["--device", "tpu"], ["--device", "invalid choice: 'tpu'", "cuda"]),
        (["--dtype", "int8"], ["--dtype", "invalid choice: 'int8'", "bfloat16"]),
    ],
)
def test_bench_serving_bad_device_fails_clearly(tmp_path, capsys, monkeypatch, argv, expected):
    import torch

    from bench.serving import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # any machine: no GPU
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--quick", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "expected"),
    [
        ("cpu", None, False, ("cpu", "float32")),
        ("cpu", "bfloat16", False, ("cpu", "bfloat16")),
        ("cuda", None, True, ("cuda", "bfloat16")),
        ("cuda", "float32", True, ("cuda", "float32")),
    ],
)
def test_resolve_device_defaults(monkeypatch, device, dtype, cuda, expected):
    import torch

    from bench.serving_setup import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_device(device, dtype) == expected


def test_gpu_results_get_their_own_file_names():
    from bench.serving import device_suffix

    assert device_suffix("cpu") == ""  # the committed CPU results keep their names
    assert device_suffix("cuda") == "-cuda"
