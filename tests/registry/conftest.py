"""Registry fixtures: tiny bases in the store of this test's registry (the ``registry`` fixture
of tests/conftest.py), and adapter folders broken in one specific way each (built by copying a
good tiny adapter)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from loradock.registry.api import Registry
from loradock.registry.card import build_base_card
from tests.helpers.registry import BASE_ID, NARROW_BASE_ID


@pytest.fixture
def adapter_dir(tiny_adapter_factory) -> Path:
    """A good tiny LoRA adapter (r=4 on q_proj/v_proj). Shared by tests: never modify it."""
    return tiny_adapter_factory(seed=1, r=4)


@pytest.fixture(scope="session")
def narrow_base(tmp_path_factory, tiny_base) -> Path:
    """A model folder whose config says hidden_size=32 (weights are not read by the checks)."""
    out = tmp_path_factory.mktemp("narrow-base") / "model"
    shutil.copytree(tiny_base, out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_size=32, intermediate_size=64)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture
def registry_with_base(registry, tiny_base, narrow_base) -> Registry:
    """A registry holding ``acme/tiny-base`` and ``acme/tiny-base-narrow``."""
    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    registry.publish_base(narrow_base, NARROW_BASE_ID, card=build_base_card())
    return registry


@pytest.fixture
def broken_adapter(tmp_path, adapter_dir) -> Callable[[str], Path]:
    """``broken_adapter(kind)``: a copy of the good adapter, damaged as ``kind`` says."""

    def make(kind: str) -> Path:
        out = tmp_path / f"broken-{kind}"
        shutil.copytree(adapter_dir, out)
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        weights = out / "adapter_model.safetensors"
        if kind == "no-config":
            config_path.unlink()
        elif kind == "bad-json":
            config_path.write_text('{"peft_type": "LORA", "r": 4,')
        elif kind == "no-weights":
            weights.unlink()
        elif kind == "pickle-only":
            weights.rename(out / "adapter_model.bin")
        elif kind == "truncated":
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) - 100])
        elif kind == "bad-header":
            weights.write_bytes((40).to_bytes(8, "little") + b"{not json" + b" " * 31)
        elif kind == "ia3":
            config.update(peft_type="IA3")
        elif kind == "modules-to-save":
            config.update(modules_to_save=["lm_head"])
        elif kind == "unknown-target":
            config.update(target_modules=["q_proj", "v_proj", "qkv_fused"])
        else:
            raise ValueError(kind)
        if config_path.exists() and kind not in ("bad-json",):
            config_path.write_text(json.dumps(config))
        return out

    return make
