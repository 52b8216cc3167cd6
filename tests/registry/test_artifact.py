"""read_adapter: PEFT files read from their headers, damaged folders refused with a reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from loradock.errors import ArtifactError, UnsafeArtifactError
from loradock.registry.artifact import read_adapter, read_safetensors_header


def test_reads_a_peft_adapter(adapter_dir):
    a = read_adapter(adapter_dir)
    assert a.peft_type == "LORA"
    assert (a.rank, a.alpha) == (4, 8.0)
    assert a.target_modules == ("q_proj", "v_proj")
    assert a.modules_to_save == ()
    assert a.weights_file == "adapter_model.safetensors"
    assert "adapter_config.json" in a.files
    assert a.size_bytes == sum((adapter_dir / f).stat().st_size for f in a.files)
    # Two layers x two modules x (A, B), shapes from the header
    assert len(a.tensors) == 8
    q = next(m for m in a.lora_modules() if m.path == "model.layers.0.self_attn.q_proj")
    assert (q.rank, q.in_features, q.out_features) == (4, 64, 64)
    assert a.layer_indices() == {0, 1}
    assert a.max_rank == 4 and a.extra_tensors() == []


def test_all_linear_reports_module_names(tiny_adapter_factory):
    a = read_adapter(tiny_adapter_factory(seed=2, r=2, target_modules="all-linear"))
    assert set(a.target_modules) >= {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj"}
    assert all("." not in name for name in a.target_modules)


def test_header_matches_safetensors_itself(adapter_dir):
    from safetensors import safe_open

    ours = read_safetensors_header(adapter_dir / "adapter_model.safetensors")
    with safe_open(adapter_dir / "adapter_model.safetensors", "np") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert {k: v.shape for k, v in ours.items()} == theirs


def test_reading_does_not_import_torch(adapter_dir):
    code = (
        "import sys; from loradock.registry.artifact import read_adapter; "
        f"read_adapter({str(adapter_dir)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("kind", "error", "pattern"),
    [
        ("no-config", ArtifactError, r"No adapter_config\.json in '.*broken-no-config'"),
        ("bad-json", ArtifactError, r"adapter_config\.json' is not valid JSON"),
        ("no-weights", ArtifactError, r"No weights in '.*broken-no-weights'"),
        ("pickle-only", UnsafeArtifactError, r"'.*adapter_model\.bin' is a pickle file"),
        ("truncated", ArtifactError, r"'.*adapter_model\.safetensors' is truncated"),
        ("bad-header", ArtifactError, r"'.*adapter_model\.safetensors' has a corrupt header"),
    ],
)
def test_damaged_adapters_are_refused(broken_adapter, kind, error, pattern):
    folder = broken_adapter(kind)
    with pytest.raises(error, match=pattern):
        read_adapter(folder)


def test_pickle_allowed_on_request(broken_adapter):
    a = read_adapter(broken_adapter("pickle-only"), allow_pickle=True)
    assert a.weights_file == "adapter_model.bin" and a.tensors == {}


def test_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match=re.escape(repr(str(tmp_path / "nope")))):
        read_adapter(tmp_path / "nope")


@pytest.mark.parametrize(
    ("change", "quoted"),
    [({"r": 0}, "r=0"), ({"r": "8"}, "r='8'"), ({"lora_alpha": None}, "lora_alpha=None")],
)
def test_bad_config_values(broken_adapter, change, quoted):
    folder = broken_adapter("ia3")  # any copy will do; the config is rewritten below
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(peft_type="LORA", **change)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=re.escape(quoted)):
        read_adapter(folder)


def test_header_offsets_past_the_data(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(ArtifactError, match="truncated"):
        read_safetensors_header(path)
    bad = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(len(bad).to_bytes(8, "little") + bad + b"\0" * 8)
    with pytest.raises(ArtifactError, match="tensor 'w'"):
        read_safetensors_header(path)
