"""ServerConfig validation (every problem at once) and the `loradock serve` command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loradock.errors import ConfigError
from loradock.serving.config import HttpConfig, PeftEngineConfig, ServerConfig
from loradock.serving.engines.vllm.options import VllmConfig

KEY = "sk-0123456789abcdef"

BAD = [
    ({"base": ""}, "base '' is empty"),
    ({"engine": "tgi"}, "engine 'tgi'"),
    ({"dtype": "int3"}, "dtype 'int3'"),
    ({"max_loaded": 0}, "max_loaded=0"),
    ({"max_batch_size": -1}, "max_batch_size=-1"),
    ({"max_queue": 0}, "max_queue=0"),
    ({"max_model_len": 2}, "max_model_len=2"),
    ({"max_wait_ms": -5}, "max_wait_ms=-5"),
    ({"port": 70000}, "port=70000"),
    ({"torch_threads": 0}, "torch_threads=0"),
    ({"adapters": {"a/b": "acme/x"}}, "served adapter name 'a/b'"),
    ({"adapters": {"dates": "/tmp/adapter"}}, "expected a registry name"),
    ({"api_key": "k"}, "api_key must be"),
    ({"api_key": "k" * 15}, "at least 16 characters"),
    ({"admin_key": " " + "k" * 20}, "admin_key must be"),
    ({"allow_any_registry_adapter": True, "only_listed": True}, "contradict each other"),
    ({"max_request_bytes": 10}, "max_request_bytes=10 must be an integer >= 1024"),
    ({"served_base_name": "/srv/models/base"}, "served base name '/srv/models/base'"),
    ({"served_base_name": "a/b/c"}, "never a path"),
    ({"served_base_name": "../up"}, "never a path"),
    ({"served_base_name": "has space"}, "served base name 'has space'"),
    ({"served_base_name": "x", "adapters": {"x": "acme/x"}}, "also an --adapter name"),
    # merged models and vLLM options
    (
        {"merged": True, "engine": "vllm", "adapters": {"d": "acme/d"}},
        "adapters 'd=acme/d' given with merged=True",
    ),
    ({"merged": "yes"}, "merged='yes' must be True or False"),
    ({"merged": True, "engine": "vllm", "max_lora_rank": 16}, "max_lora_rank=16 sizes LoRA"),
    ({"merged": True, "engine": "vllm", "max_loras": 2}, "max_loras=2 sizes LoRA"),
    ({"max_lora_rank": 16}, "max_lora_rank=16 is a vLLM option, but engine is 'peft'"),
    ({"tensor_parallel_size": 2}, "tensor_parallel_size=2 is a vLLM option"),
    ({"gpu_memory_utilization": 0.5}, "gpu_memory_utilization=0.5 is a vLLM option"),
    ({"engine": "vllm", "tensor_parallel_size": 0}, "tensor_parallel_size=0 must be an integer"),
    ({"engine": "vllm", "tensor_parallel_size": 1.5}, "tensor_parallel_size=1.5 must be"),
    ({"engine": "vllm", "gpu_memory_utilization": 0}, "gpu_memory_utilization=0 must be"),
    ({"engine": "vllm", "gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5 must be"),
    ({"engine": "vllm", "gpu_memory_utilization": "lots"}, "gpu_memory_utilization='lots'"),
    ({"engine": "vllm", "max_lora_rank": 12}, "max_lora_rank=12 must be one of 1, 8, 16"),
    ({"engine": "vllm", "max_lora_rank": True}, "max_lora_rank=True must be one of"),
    ({"engine": "vllm", "max_loras": 0}, "max_loras=0 must be an integer >= 1"),
    ({"engine": "vllm", "max_loras": 4, "max_cpu_loras": 2}, "max_cpu_loras=2 must be >= max_"),
    ({"engine": "vllm", "kv_cache_memory_bytes": -1}, "kv_cache_memory_bytes=-1 must be"),
    # PEFT-engine options are refused with vLLM, not silently ignored
    ({"engine": "vllm", "torch_threads": 2}, "torch_threads=2 is a PEFT-engine option"),
    ({"engine": "vllm", "max_wait_ms": 1.0}, "max_wait_ms=1.0 is a PEFT-engine option"),
    ({"engine": "vllm", "device": "cpu"}, "device='cpu' is a PEFT-engine option"),
    ({"engine": "vllm", "engine_process": False}, "engine_process=False is a PEFT-engine"),
    ({"seed": 3}, "seed=3 is a vLLM option, but engine is 'peft'"),
]


@pytest.mark.parametrize(("options", "fragment"), BAD, ids=[b[1][:28] for b in BAD])
def test_bad_options_are_named(options, fragment):
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_options(**{"base": "tiny/base", **options})
    assert fragment in str(info.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_options(base="tiny/base", engine="x", max_loaded=0, port=-1)
    assert len(info.value.problems) == 3
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_options(
            base="acme/m", merged=True, engine="vllm", adapters={"d": "acme/d"},
            max_lora_rank=3, gpu_memory_utilization=2.0, tensor_parallel_size=0,
        )  # fmt: skip
    # adapters, max_lora_rank (no LoRA on a merged model, and not a vLLM rank), gmu, tp
    assert len(info.value.problems) == 5


@pytest.mark.parametrize(
    "options",
    [
        {"merged": True},  # a merged model on the PEFT engine: a plain model, no adapters
        {"merged": True, "engine": "vllm", "tensor_parallel_size": 2},
        {"merged": True, "engine": "vllm", "gpu_memory_utilization": 0.9},
        {"engine": "vllm", "max_lora_rank": 64, "max_loras": 2, "max_cpu_loras": 2},
        {"engine": "vllm", "gpu_memory_utilization": 1, "kv_cache_memory_bytes": 2**28},
    ],
)
def test_good_vllm_and_merged_options(options):
    config = ServerConfig.from_options(base="acme/m", **options)
    assert config.serves_adapters is not config.merged


@pytest.mark.parametrize(
    ("device", "has_vllm", "asked", "expected"),
    [
        ("cpu", True, None, "peft"),  # the default is auto: on a CPU, the PEFT engine
        ("cuda", True, None, "vllm"),
        ("cuda:1", True, "auto", "vllm"),
        ("cuda", False, "auto", "peft"),  # no vLLM to run: the engine that can
        ("cuda", True, "peft", "peft"),  # a named engine is kept
        ("cpu", True, "vllm", "vllm"),
    ],
)
@pytest.mark.parametrize("build", ["from_options", "constructor"])
def test_engine_auto_resolves_once_by_device(monkeypatch, device, has_vllm, asked, expected, build):
    monkeypatch.setenv("LORADOCK_DEVICE", device)
    monkeypatch.setattr("loradock.serving.config.vllm_installed", lambda: has_vllm)
    options = {} if asked is None else {"engine": asked}
    if build == "from_options":
        config = ServerConfig.from_options(base="tiny/base", **options)
    else:
        config = ServerConfig(base="tiny/base", **options)
    assert config.engine == expected


def test_engine_auto_choosing_vllm_refuses_peft_options(monkeypatch):
    monkeypatch.setenv("LORADOCK_DEVICE", "cuda")
    monkeypatch.setattr("loradock.serving.config.vllm_installed", lambda: True)
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_options(base="tiny/base", torch_threads=2)
    assert "torch_threads=2 is a PEFT-engine option, but engine is 'vllm'" in str(info.value)


@pytest.mark.parametrize(
    ("base", "served", "expected"),
    [
        ("tiny/base", None, "tiny/base"),
        ("tiny/base@prod", None, "tiny/base@prod"),
        ("/srv/models/SmolLM2-135M", None, "SmolLM2-135M"),
        ("/srv/models/my model/", None, "my-model"),
        ("./base", None, "base"),
        ("~/models/x", None, "x"),
        ("/srv/models/SmolLM2-135M", "acme/smollm2", "acme/smollm2"),
        ("tiny/base", "tiny", "tiny"),
    ],
)
def test_served_base_name(base, served, expected):
    config = ServerConfig(base=base, http=HttpConfig(served_base_name=served))
    assert config.base_model_name == expected


def test_cli_served_name_reaches_the_config(monkeypatch):
    from loradock.cli import app

    seen = []
    monkeypatch.setattr("loradock.serving.server.serve", seen.append)
    args = ["serve", "--base", "/srv/models/base", "--served-name", "acme/base", "--port", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen[0].base == "/srv/models/base" and seen[0].base_model_name == "acme/base"


def _invoke_serve(monkeypatch, args):
    from loradock.cli import app

    seen = []
    monkeypatch.setattr("loradock.serving.server.serve", seen.append)
    return CliRunner().invoke(app, ["serve", *args]), seen


def test_cli_merged_serves_the_model_alone_on_vllm(monkeypatch):
    result, seen = _invoke_serve(
        monkeypatch,
        ["--merged", "acme/m@prod", "--tensor-parallel-size", "2",
         "--gpu-memory-utilization", "0.8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert (config.base, config.merged, config.engine) == ("acme/m@prod", True, "vllm")
    assert (config.vllm.tensor_parallel_size, config.vllm.gpu_memory_utilization) == (2, 0.8)
    assert config.adapters == {} and config.base_model_name == "acme/m@prod"
    result, seen = _invoke_serve(monkeypatch, ["--merged", "acme/m", "--engine", "peft"])
    assert result.exit_code == 0, result.output
    assert (seen[0].merged, seen[0].engine) == (True, "peft")


def test_cli_lora_options_reach_the_config(monkeypatch):
    result, seen = _invoke_serve(
        monkeypatch, ["--base", "tiny/base", "--engine", "vllm", "--max-lora-rank", "32"]
    )
    assert result.exit_code == 0, result.output
    assert (seen[0].vllm.max_lora_rank, seen[0].merged, seen[0].engine) == (32, False, "vllm")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--merged", "acme/m", "--base", "tiny/base"], "--merged 'acme/m' is given with --base"),
        (
            ["--merged", "acme/m", "--adapter", "d=acme/d"],
            "--merged 'acme/m' is given with --adapter",
        ),
        ([], "name a model: --base BASE"),
        (["--merged", "acme/m", "--max-lora-rank", "16"], "max_lora_rank=16 sizes LoRA"),
        (["--base", "tiny/base", "--max-lora-rank", "16"], "is a vLLM option"),
        (["--merged", "acme/m", "--gpu-memory-utilization", "1.5"], "gpu_memory_utilization=1.5"),
        (["--merged", "acme/m", "--tensor-parallel-size", "0"], "tensor_parallel_size=0"),
        (["--merged", "acme/m", "--threads", "2"], "drop --threads"),
        (["--base", "tiny/base", "--engine", "vllm", "--in-process"], "drop --in-process"),
    ],
)
def test_cli_refuses_bad_merged_and_vllm_options(monkeypatch, args, fragment):
    result, seen = _invoke_serve(monkeypatch, args)
    assert result.exit_code != 0 and not seen
    assert fragment in str(result.exception) + result.output


def test_adapter_options_parse():
    parsed = ServerConfig.parse_adapter_options(["dates=acme/dates@prod", "json=acme/json"])
    assert parsed == {"dates": "acme/dates@prod", "json": "acme/json"}
    with pytest.raises(ConfigError) as info:
        ServerConfig.parse_adapter_options(["nodelim", "a=x/y", "a=x/z", "=x/y"])
    assert len(info.value.problems) == 3


def test_cli_rejects_bad_options_without_starting():
    from loradock.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--base", "tiny/base", "--max-loaded", "0", "--adapter", "oops"]
    )
    assert result.exit_code != 0
    assert "NAME=ORG/REPO" in str(result.exception) or "NAME=ORG/REPO" in result.output


def test_cli_help_lists_engine_option():
    from loradock.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--engine" in result.output and "--max-loaded" in result.output


@pytest.mark.parametrize(
    ("part", "options", "fragment"),
    [
        (HttpConfig, {"port": -1}, "port=-1"),
        (PeftEngineConfig, {"max_loaded": 0, "dtype": "int3"}, "max_loaded=0"),
        (VllmConfig, {"max_lora_rank": 12}, "max_lora_rank=12"),
    ],
)
def test_each_part_is_validated_when_created(part, options, fragment):
    with pytest.raises(ConfigError) as info:
        part(**options)
    assert len(info.value.problems) == len(options) and fragment in str(info.value)


@pytest.mark.parametrize(
    ("tree", "flat"),
    [
        ({}, {}),
        ({"http": HttpConfig(port=0, api_key=KEY)}, {"port": 0, "api_key": KEY}),
        (
            {"engine": "vllm", "peft": PeftEngineConfig(dtype="float32"),
             "vllm": VllmConfig(max_lora_rank=32)},
            {"engine": "vllm", "dtype": "float32", "max_lora_rank": 32},
        ),
    ],
)  # fmt: skip
def test_flat_options_build_the_same_tree(tree, flat):
    assert ServerConfig.from_options(base="tiny/base", **flat) == ServerConfig("tiny/base", **tree)


def test_the_tree_checks_what_spans_its_parts():
    with pytest.raises(ConfigError, match="max_lora_rank=16 is a vLLM option"):
        ServerConfig(base="tiny/base", vllm=VllmConfig(max_lora_rank=16))
    with pytest.raises(TypeError, match="unknown server option"):
        ServerConfig.from_options(base="tiny/base", max_loded=3)


def test_cli_defaults_are_the_configs(monkeypatch):
    monkeypatch.delenv("LORADOCK_API_KEY", raising=False)
    monkeypatch.delenv("LORADOCK_ADMIN_KEY", raising=False)
    result, seen = _invoke_serve(monkeypatch, ["--base", "tiny/base"])
    assert result.exit_code == 0, result.output
    assert seen == [ServerConfig(base="tiny/base")]


@pytest.mark.parametrize(
    ("args", "path", "expected"),
    [
        (["--max-loaded", "3"], "peft.max_loaded", 3),
        (["--max-wait-ms", "2.5"], "peft.max_wait_ms", 2.5),
        (["--dtype", "float32"], "peft.dtype", "float32"),
        (["--threads", "2"], "peft.torch_threads", 2),
        (["--in-process"], "engine_process", False),
        (["--only-listed"], "http.adapter_scope", "listed"),
        (["--any-registry-adapter"], "http.adapter_scope", "any"),
        ([], "http.adapter_scope", "indexed"),
        (["--docs"], "http.docs", True),
        (["--max-request-bytes", "4096"], "http.max_request_bytes", 4096),
        (["--served-base-name", "acme/b"], "http.served_base_name", "acme/b"),
        (["--host", "0.0.0.0", "--port", "0"], "http.port", 0),
        (["--admin-key", KEY], "http.admin_key", KEY),
        (["--engine", "vllm", "--max-cpu-loras", "4"], "vllm.max_cpu_loras", 4),
        (["--engine", "vllm", "--kv-cache-memory-bytes", "1024"], "vllm.kv_cache_memory_bytes", 1024),
    ],
)  # fmt: skip
def test_cli_flags_reach_their_field(monkeypatch, args, path, expected):
    result, seen = _invoke_serve(monkeypatch, ["--base", "tiny/base", *args])
    assert result.exit_code == 0, result.output
    value = seen[0]
    for name in path.split("."):
        value = getattr(value, name)
    assert value == expected


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LORADOCK_API_KEY", KEY)
    result, seen = _invoke_serve(monkeypatch, ["--base", "tiny/base"])
    assert result.exit_code == 0, result.output
    assert seen[0].http.api_key == KEY and KEY not in repr(seen[0])


@pytest.mark.parametrize(
    ("text", "extra", "fragment"),
    [
        (KEY + "\n", [], None),  # the file's newline is not part of the key
        ("short\n", [], "at least 16 characters"),
        (KEY, ["--api-key", KEY], "--api-key and --api-key-file are both given"),
        (None, [], "cannot be read"),
    ],
    ids=["read", "short", "both", "missing"],
)
def test_api_key_file(monkeypatch, tmp_path, text, extra, fragment):
    monkeypatch.delenv("LORADOCK_API_KEY", raising=False)
    path = tmp_path / "key"
    if text is not None:
        path.write_text(text)
    args = ["--base", "tiny/base", "--api-key-file", str(path), *extra]
    result, seen = _invoke_serve(monkeypatch, args)
    if fragment is None:
        assert result.exit_code == 0, result.output
        assert seen[0].http.api_key == KEY
    else:
        assert seen == [] and fragment in str(result.exception), result.exception


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({}, []),
        ({"host": "0.0.0.0"}, ["listening on 0.0.0.0 without an API key"]),
        ({"host": "0.0.0.0", "api_key": KEY}, []),
        ({"allow_any_registry_adapter": True}, ["--any-registry-adapter"]),
        ({"docs": True}, ["--docs"]),
    ],
)
def test_exposure_names_what_widens_the_defaults(options, fragments):
    found = HttpConfig(**options).exposure()
    assert len(found) == len(fragments)
    assert all(f in text for f, text in zip(fragments, found, strict=True)), found
