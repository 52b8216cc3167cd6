"""``loradock serve --merged REPO@rev --engine peft``: a merged model served alone, end to end
(the vLLM engine's run of the same check is in test_vllm_engine.py)."""

from __future__ import annotations

import pytest

from loradock.errors import ConfigError
from tests.serving.conftest import API_KEY, check_merged_server, config_from_cli, publish_merged

PROMPT = "Convert the date 3 March 2024 to ISO format:"


def _adapter_greedy_text(base, adapter, prompt: str, n: int) -> str:
    """What the unmerged adapter (None: the base) says greedily (transformers + PEFT), to EOS."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
    new = out[0, ids.shape[1] :].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def test_merged_model_on_the_peft_engine_serves_the_adapters_text(
    serving_base, tmp_path, monkeypatch
):
    adapter = serving_base.parent / "adapter"
    registry = publish_merged(tmp_path, serving_base, adapter, "acme/dates-merged")
    args = ["--merged", "acme/dates-merged@prod", "--engine", "peft", "--dtype", "float32"]
    config = config_from_cli(
        monkeypatch, [*args, "--api-key", API_KEY, "--max-model-len", "128", "--threads", "1"]
    )
    assert (config.merged, config.engine, config.adapters) == (True, "peft", {})
    expected = _adapter_greedy_text(serving_base, adapter, PROMPT, 6)
    assert expected.strip() and expected != _adapter_greedy_text(serving_base, None, PROMPT, 6)
    check_merged_server(config, registry, prompt=PROMPT, expected=expected, max_tokens=6)


def test_merged_naming_an_adapter_is_refused_before_an_engine_is_built(published):
    from loradock.serving.config import ServerConfig
    from loradock.serving.server import build_app

    name = f"{published.adapters[0]}@prod"
    with pytest.raises(ConfigError) as info:
        build_app(ServerConfig(base=name, merged=True), registry=published.registry)
    assert f"merged model {name!r} is an adapter (no config.json)" in str(info.value)
    assert "--base BASE --adapter" in str(info.value)
