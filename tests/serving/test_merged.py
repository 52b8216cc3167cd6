"""``loradock serve --merged REPO@rev --engine peft``: a merged model served alone, end to end
(the vLLM engine's run of the same check is in test_vllm_engine.py)."""

from __future__ import annotations

import pytest

from loradock.errors import ConfigError
from tests.helpers.serving import (
    API_KEY,
    adapter_greedy_text,
    check_merged_server,
    config_from_cli,
    publish_merged,
)

PROMPT = "Convert the date 3 March 2024 to ISO format:"


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
    expected = adapter_greedy_text(serving_base, adapter, PROMPT, 6)
    assert expected.strip() and expected != adapter_greedy_text(serving_base, None, PROMPT, 6)
    check_merged_server(config, registry, prompt=PROMPT, expected=expected, max_tokens=6)


def test_merged_naming_an_adapter_is_refused_before_an_engine_is_built(published):
    from loradock.serving.config import ServerConfig
    from loradock.serving.server import build_app

    name = f"{published.adapters[0]}@prod"
    with pytest.raises(ConfigError) as info:
        build_app(ServerConfig(base=name, merged=True), registry=published.registry)
    assert f"merged model {name!r} is an adapter (no config.json)" in str(info.value)
    assert "--base BASE --adapter" in str(info.value)
