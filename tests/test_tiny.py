"""``loradock.tiny.make_random_base``: a model folder's architecture with fresh random weights."""

from __future__ import annotations

import json


def test_random_base_keeps_config_and_tokenizer_and_draws_new_weights(tiny_base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loradock.tiny import make_random_base

    source = tmp_path / "config-only"
    source.mkdir()
    for f in tiny_base.iterdir():  # everything but the weights: what a GPU machine carries
        if not f.name.endswith(".safetensors"):
            (source / f.name).write_bytes(f.read_bytes())
    made = make_random_base(source, tmp_path / "random", seed=1)
    config = json.loads((made / "config.json").read_text())
    original = json.loads((tiny_base / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        assert config[key] == original[key], key
    text = "Convert the date 3 March 2024"
    assert AutoTokenizer.from_pretrained(made)(text) == AutoTokenizer.from_pretrained(tiny_base)(
        text
    )

    def weight(folder):
        return AutoModelForCausalLM.from_pretrained(folder).model.layers[0].mlp.up_proj.weight

    ours, theirs = weight(made), weight(tiny_base)  # tiny_base drew its weights with seed 0
    assert ours.shape == theirs.shape and not torch.equal(ours, theirs)
    assert torch.equal(ours, weight(make_random_base(source, tmp_path / "again", seed=1)))
