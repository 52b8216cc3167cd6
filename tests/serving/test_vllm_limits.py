"""vLLM's LoRA limits and the adapter checks, without starting vLLM (fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loradock.errors import ConfigError, IncompatibleAdapterError
from loradock.registry.artifact import read_adapter
from loradock.serving.engines.base import AdapterSpec
from loradock.serving.engines.vllm.limits import (
    LoraLimits,
    derive_lora_limits,
    round_up_rank,
    servable_modules,
    vllm_adapter_problems,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from loradock.tiny import make_tiny_base

    # head size 32: the smallest vLLM's CPU attention accepts (tiny_base's 16 is refused).
    return make_tiny_base(tmp_path_factory.mktemp("vbase") / "m", num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    from loradock.tiny import make_tiny_adapter

    return make_tiny_adapter(base, tmp_path_factory.mktemp("va") / "a", r=16)


def _variant(adapter: Path, tmp_path: Path, **config_changes) -> Path:
    out = tmp_path / "variant"
    shutil.copytree(adapter, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config.update(config_changes)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def test_servable_modules_are_the_2d_weights(base):
    names = servable_modules(base)
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    assert "embed_tokens" in names
    assert not {"input_layernorm", "norm", "post_attention_layernorm"} & names


@pytest.mark.parametrize(
    ("changes", "max_rank", "expected"),
    [
        ({}, 8, ["rank 16 is above this server's max_lora_rank 8", "--max-lora-rank 16"]),
        ({"modules_to_save": ["lm_head"]}, 16, ["modules_to_save ['lm_head']", "--merged"]),
        ({"use_dora": True}, 16, ["DoRA (use_dora)"]),
        ({"lora_bias": True}, 16, ["LoRA bias"]),
        ({"init_lora_weights": "pissa"}, 16, ["init_lora_weights='pissa'"]),
        ({"peft_type": "IA3"}, 16, ["peft_type 'IA3'"]),
        (
            {"target_modules": ["q_proj", "input_layernorm"]},
            16,
            ["target modules ['input_layernorm']"],
        ),
        (
            {"use_dora": True, "modules_to_save": ["score_x"]},
            8,
            ["rank 16", "DoRA", "modules_to_save ['score_x']"],
        ),
    ],
)
def test_unservable_adapters_list_every_reason(
    adapter, base, tmp_path, changes, max_rank, expected
):
    artifact = read_adapter(_variant(adapter, tmp_path, **changes))
    problems = vllm_adapter_problems(
        artifact, max_lora_rank=max_rank, servable=servable_modules(base)
    )
    text = "\n".join(problems)
    for piece in expected:
        assert piece in text


def test_a_plain_adapter_within_limits_passes(adapter, base):
    assert (
        vllm_adapter_problems(
            read_adapter(adapter), max_lora_rank=16, servable=servable_modules(base)
        )
        == []
    )


@pytest.mark.parametrize(
    ("rank", "expected"), [(1, 1), (2, 8), (8, 8), (9, 16), (33, 64), (300, 320), (512, 512)]
)
def test_round_up_rank(rank, expected):
    assert round_up_rank(rank) == expected


def test_round_up_rank_refuses_above_vllms_largest():
    with pytest.raises(ConfigError, match="rank 600"):
        round_up_rank(600)


@pytest.mark.parametrize(
    ("ranks", "kwargs", "expected"),
    [
        ([4, 8], {}, LoraLimits(8, 2, 8)),
        ([4, 12, None], {}, LoraLimits(16, 2, 8)),
        ([], {}, LoraLimits(16, 8, 8)),
        ([8] * 20, {}, LoraLimits(8, 8, 20)),
        ([8] * 20, {"max_cpu_adapters": 10}, LoraLimits(8, 8, 10)),
        ([4], {"max_lora_rank": 64, "max_loras": 3, "max_cpu_loras": 5}, LoraLimits(64, 3, 5)),
    ],
)
def test_limits_are_derived_from_the_adapters(ranks, kwargs, expected):
    options = {"max_loaded": 8, "max_cpu_adapters": 64, **kwargs}
    assert derive_lora_limits(ranks, **options) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((12, 1, 1), ["max_lora_rank=12"]),
        ((8, 0, 1), ["max_loras=0"]),
        ((8, 4, 2), ["max_cpu_loras=2 must be an integer >= 1 and >= max_loras (4)"]),
        ((7, 0, 0), ["max_lora_rank=7", "max_loras=0", "max_cpu_loras=0"]),
    ],
)
def test_invalid_limits_raise_once_with_every_problem(args, expected):
    with pytest.raises(ConfigError) as info:
        LoraLimits(*args)
    assert len(info.value.problems) == len(expected)
    for piece, problem in zip(expected, info.value.problems, strict=True):
        assert piece in problem


def _spec(path: Path, rank: int, name: str = "acme/x@prod") -> AdapterSpec:
    return AdapterSpec(name=name, repo_id="acme/x", sha="c" * 40, path=path, rank=rank)


def test_engine_refuses_an_adapter_before_vllm_sees_it(base, adapter):
    from loradock.serving.engines.vllm.engine import VllmEngine
    from loradock.serving.engines.vllm.options import VllmConfig

    engine = VllmEngine(base, options=VllmConfig(max_lora_rank=8))
    assert engine.capabilities.max_lora_rank == 8
    with pytest.raises(IncompatibleAdapterError) as info:
        engine.check_adapter(_spec(adapter, 16))
    assert "'acme/x@prod'" in str(info.value)
    assert "rank 16 is above this server's max_lora_rank 8" in str(info.value)
    assert engine._llm is None  # nothing was started


def test_engine_derives_rank_from_the_adapters_it_serves(base, adapter):
    pytest.importorskip("vllm", reason="engine_args() builds vLLM's AsyncEngineArgs")
    from loradock.serving.engines.vllm.engine import VllmEngine

    engine = VllmEngine(base, adapters=[_spec(adapter, 16)], registry_ranks=[4, 8])
    assert engine.limits == LoraLimits(16, 3, 8)
    args = engine.engine_args()
    null = 1 if engine.uses_null_adapter() else 0  # the CPU build's base-request slot
    assert (args.enable_lora, args.max_lora_rank, args.max_loras) == (True, 16, 3 + null)
    assert args.max_cpu_loras >= 8 + null


def test_preloaded_adapters_are_checked_at_construction(base, adapter, tmp_path):
    from loradock.serving.engines.vllm.engine import VllmEngine
    from loradock.serving.engines.vllm.options import VllmConfig

    dora = _variant(adapter, tmp_path, use_dora=True)
    with pytest.raises(IncompatibleAdapterError) as info:
        VllmEngine(
            base,
            options=VllmConfig(max_lora_rank=8),
            adapters=[_spec(adapter, 16, "big"), _spec(dora, 16, "dora")],
        )
    text = str(info.value)
    assert "big: rank 16" in text and "dora: DoRA" in text


def test_merged_engine_takes_no_adapters(base, adapter):
    pytest.importorskip("vllm", reason="engine_args() builds vLLM's AsyncEngineArgs")
    from loradock.serving.engines.vllm.engine import VllmEngine

    engine = VllmEngine(base, base_name="acme/merged", merged=True)
    assert engine.capabilities.merged and engine.capabilities.max_lora_rank is None
    assert engine.engine_args().enable_lora is False
    with pytest.raises(IncompatibleAdapterError, match="merged model 'acme/merged'"):
        engine.check_adapter(_spec(adapter, 16))


@pytest.mark.parametrize(
    ("part", "kwargs", "expected"),
    [
        ("peft", {"dtype": "fp8"}, ["dtype 'fp8'"]),
        ("peft", {"max_model_len": 4}, ["max_model_len=4"]),
        ("vllm", {"tensor_parallel_size": 0}, ["tensor_parallel_size=0"]),
        ("vllm", {"gpu_memory_utilization": 1.5}, ["gpu_memory_utilization=1.5"]),
        (
            "vllm",
            {"max_loras": 0, "kv_cache_memory_bytes": -1},
            ["max_loras=0", "kv_cache_memory_bytes=-1"],
        ),
        ("vllm", {"seed": -1}, ["seed=-1"]),
    ],
)
def test_invalid_engine_options(part, kwargs, expected):
    from loradock.serving.config import PARTS

    with pytest.raises(ConfigError) as info:
        PARTS[part](**kwargs)
    assert len(info.value.problems) == len(expected)
    for piece, problem in zip(expected, info.value.problems, strict=True):
        assert piece in problem


def test_cpu_kv_cache_is_bounded(base):
    pytest.importorskip("vllm", reason="engine_args() builds vLLM's AsyncEngineArgs")
    from loradock.serving.engines.vllm.args import CPU_KV_CACHE_BYTES
    from loradock.serving.engines.vllm.engine import VllmEngine
    from loradock.serving.engines.vllm.options import VllmConfig

    args = VllmEngine(base).engine_args()
    assert args.kv_cache_memory_bytes in (None, CPU_KV_CACHE_BYTES)  # None only on a GPU
    explicit = VllmEngine(base, options=VllmConfig(gpu_memory_utilization=0.1)).engine_args()
    assert explicit.gpu_memory_utilization == 0.1


def test_create_engine_derives_limits_from_the_registry(base, adapter):
    from types import SimpleNamespace

    from loradock.serving.config import ServerConfig
    from loradock.serving.engines.vllm.engine import create_engine

    class StandInRegistry:  # only what create_engine reads: resolve() and compatible()
        def resolve(self, name):
            assert name == "acme/x@prod"
            return SimpleNamespace(artifact=read_adapter(adapter))  # r=16

        def compatible(self, base_model, *, limit):
            assert (base_model, limit) == ("tiny/base", None)  # every adapter, not a page
            return [SimpleNamespace(rank=4), SimpleNamespace(rank=32), SimpleNamespace(rank=None)]

    config = ServerConfig.from_options(
        base="tiny/base@main", engine="vllm", adapters={"d": "acme/x@prod"}, max_loaded=2
    )
    engine = create_engine(config, base, registry=StandInRegistry())
    assert engine.limits == LoraLimits(max_lora_rank=32, max_loras=2, max_cpu_loras=3)
    assert engine.capabilities.name == "vllm" and not engine.capabilities.merged

    merged = create_engine(ServerConfig(base="acme/merged", merged=True, engine="vllm"), base)
    assert merged.capabilities.merged and merged.limits is None
    assert merged.base_name == "acme/merged"


def test_server_config_options_reach_the_vllm_engine(base):
    from loradock.serving.config import ServerConfig
    from loradock.serving.engines.vllm.engine import create_engine

    config = ServerConfig.from_options(
        base="acme/merged", merged=True, engine="vllm", tensor_parallel_size=2,
        gpu_memory_utilization=0.5, kv_cache_memory_bytes=2**27, max_model_len=64,
    )  # fmt: skip
    merged = create_engine(config, base)
    assert merged.merged and merged.limits is None
    opts = merged.options
    assert (opts.tensor_parallel_size, opts.gpu_memory_utilization) == (2, 0.5)
    assert (opts.kv_cache_memory_bytes, merged.sizes.max_model_len) == (2**27, 64)
    lora = ServerConfig.from_options(
        base="tiny/base", engine="vllm", max_lora_rank=64, max_loras=3, max_cpu_loras=5
    )
    assert create_engine(lora, base).limits == LoraLimits(64, 3, 5)


def test_build_engine_derives_max_lora_rank_from_the_registry(published):
    from loradock.serving.config import ServerConfig
    from loradock.serving.server import build_engine

    ranks = {published.registry.show(r).rank for r in published.adapters}
    assert ranks == {4}  # the fixture's adapters: rank 4, which vLLM serves at rank 8
    config = ServerConfig.from_options(base="tiny/base", engine="vllm", max_loaded=2)
    path = published.base.path
    engine = build_engine(config, path, registry=published.registry)
    # max_cpu_loras: room for every adapter of the base in the registry.
    assert engine.limits == LoraLimits(8, max_loras=2, max_cpu_loras=len(published.adapters))
    assert engine.capabilities.max_lora_rank == 8
    # Without the registry nothing is known: vLLM's default rank, sized for max_loaded only.
    assert build_engine(config, path).limits == LoraLimits(16, 2, 2)
    # An explicit --max-lora-rank wins over the registry's.
    explicit = ServerConfig.from_options(base="tiny/base", engine="vllm", max_lora_rank=32)
    assert build_engine(explicit, path, registry=published.registry).limits.max_lora_rank == 32
