"""``bench/serving.py`` runs end to end at smoke-test sizes and writes its results; its device
options fail early and clearly where the device is missing."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_serving_quick(tmp_path, capsys):
    from bench.serving import main
    from bench.serving_setup import served_dtype

    assert main(["--quick", "--json", "--only", "bl", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "serving-quick.json").read_text())
    assert printed["rows"] == saved["rows"]
    assert (saved["device"], saved["dtype"], saved["gpu"]) == ("cpu", served_dtype("cpu"), None)
    assert saved["shape"] == "toy" and saved["model"].startswith("toy random Llama")
    rows = {row["key"]: row for row in saved["rows"]}
    assert set(rows) == {"b_16_adapters_vs_1", "l_linear_limit", "l_engine_decode_vs_limit",
                         "l_profile"}  # fmt: skip
    assert all(row["value"] > 0 for row in rows.values())
    # The profile's parts cover the whole decode step (other = the rest, never negative).
    shares = saved["profile"]["breakdown"]["shares"]
    assert sum(shares.values()) == pytest.approx(1, abs=1e-3)
    assert min(shares.values()) >= 0 and shares["base linear layers"] > 0
    assert (tmp_path / "serving_ratios-quick.png").stat().st_size > 0


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
    ("device", "dtype", "cuda", "cpu_bf16", "expected"),
    [
        # No dtype: what `loradock serve --dtype auto` runs there.
        ("cpu", None, False, False, ("cpu", "float32")),
        ("cpu", None, False, True, ("cpu", "bfloat16")),
        ("cpu", "float32", False, True, ("cpu", "float32")),
        ("cuda", None, True, False, ("cuda", "bfloat16")),
        ("cuda", "float32", True, False, ("cuda", "float32")),
    ],
)
def test_resolve_device_defaults(monkeypatch, device, dtype, cuda, cpu_bf16, expected):
    import torch

    from bench.serving_setup import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr("loradock.modeling.cpu_supports_bf16", lambda: cpu_bf16)
    assert resolve_device(device, dtype) == expected


@pytest.mark.parametrize(
    ("shape", "device", "quick", "suffix"),
    [
        ("smollm2", "cpu", False, ""),  # the default run: serving.json
        ("llama-1b", "cpu", False, "-llama-1b"),
        ("toy", "cpu", False, "-toy"),
        ("toy", "cpu", True, "-quick"),  # --quick's default shape
        ("smollm2", "cpu", True, "-smollm2-quick"),
        ("toy", "cuda", True, "-cuda-quick"),  # a GPU run never overwrites the CPU's files
        ("smollm2", "cuda", False, "-cuda"),
    ],
)
def test_each_kind_of_run_gets_its_own_file_names(shape, device, quick, suffix):
    from bench.serving_report import results_suffix

    assert results_suffix(shape, device, quick) == suffix


@pytest.mark.parametrize("shape", ["smollm2", "llama-1b"])
def test_shipped_shapes_fit_the_shipped_tokenizer(shape):
    from transformers import AutoConfig, AutoTokenizer

    from bench.model_shapes import SHAPES_DIR

    config = AutoConfig.from_pretrained(SHAPES_DIR / shape)
    tokenizer = AutoTokenizer.from_pretrained(SHAPES_DIR / "smollm2")
    assert len(tokenizer) <= config.vocab_size  # every token id has an embedding row
    assert tokenizer.eos_token_id == config.eos_token_id


@pytest.mark.parametrize(
    ("shape", "imported", "expected"),
    [
        ("smollm2", True, "imported"),  # the local hub's weights when it has them
        ("smollm2", False, "random"),
        ("llama-1b", True, "random"),  # no weights of it anywhere: always random
    ],
)
def test_real_shapes_use_imported_weights_where_there_are_some(
    tmp_path, monkeypatch, shape, imported, expected
):
    import bench.model_shapes as shapes

    folders = {"imported": tmp_path / "imported", "random": tmp_path / "random"}
    monkeypatch.setattr(
        shapes, "imported_smollm2", lambda: folders["imported"] if imported else None
    )
    monkeypatch.setattr(shapes, "random_base", lambda shape, dest: folders["random"])
    path, model = shapes.build_base(shape, tmp_path / "base")
    assert path == folders[expected]
    assert ("imported weights" in model) == (expected == "imported")


@pytest.mark.parametrize(
    ("shape", "products", "weights"),
    [
        # 30 layers x 7 + the head; 30 x (2 x 576^2 + 2 x 576 x 192 + 3 x 576 x 1536) + 576 x 49152
        ("smollm2", 211, 134_479_872),
        # 22 x 7 + 1; 22 x (2 x 2048^2 + 2 x 2048 x 256 + 3 x 2048 x 5632) + 2048 x 49152
        ("llama-1b", 155, 1_069_547_520),
    ],
)
def test_limit_row_times_every_linear_product_of_a_decode_step(shape, products, weights):
    from bench.model_shapes import SHAPES_DIR, model_config
    from bench.serving_limit import linear_shapes

    shapes = linear_shapes(model_config(SHAPES_DIR / shape))
    assert len(shapes) == products
    assert sum(inp * out for _, inp, out in shapes) == weights
    assert shapes[-1][0] == "lm_head"


def test_limit_row_measures_a_pass():
    from bench.serving_limit import measure_linear_limit

    config = {"hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 96}  # fmt: skip
    limit = measure_linear_limit(config, batch=4, repeats=2)
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128
    assert limit.flops == 2 * 4 * (2 * per_layer + 64 * 96)
    assert limit.step_s > 0 and limit.tps == pytest.approx(4 / limit.step_s)
