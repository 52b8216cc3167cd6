"""Hostile requests against the PEFT engine: each gets its own refusal or error, while a
well-formed request sent at the same moment (so batched with it when it runs at all) gets the
greedy text it gets alone, and no pin or row is left behind.

The table runs against the in-process engine; a few cases also against the process engine
(what ``loradock serve`` runs), where errors cross the pipe. Failures of a whole forward pass
(a prefill, a decode step) are simulated on the in-process engine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from loradock.errors import GenerationError, IncompatibleAdapterError, RequestError
from loradock.serving.config import PeftEngineConfig
from loradock.serving.engines.base import AdapterSpec, GenerationRequest, SamplingParams
from loradock.serving.engines.peft.engine import PeftEngine
from loradock.serving.engines.peft.process import ProcessEngine
from tests.helpers.event_loop import background_loop, run_on
from tests.helpers.serving import BASE_ID, settled

PROMPT = "Convert the date 3 March 2024 to ISO format:"
GREEDY = {"temperature": 0, "max_tokens": 8}


# ---- hostile adapters: a published adapter's folder, altered --------------------------------
def _over_cap(config: dict, tensors: dict) -> None:
    config["r"] = 128  # the engine's limit is 64
    for key, t in list(tensors.items()):
        shape = (128, t.shape[1]) if "lora_A" in key else (t.shape[0], 128)
        tensors[key] = torch.randn(shape) * 0.01


def _nan_weights(config: dict, tensors: dict) -> None:
    next(t for k, t in tensors.items() if "lora_A" in k)[0, 0] = float("nan")


def _backtracking(config: dict, tensors: dict) -> None:
    config["target_modules"] = r"(.|.)*\d\d"  # minutes of backtracking per name with `re`


def _compile_bomb(config: dict, tensors: dict) -> None:
    config["target_modules"] = "(?:a{100000}){100000}"  # `regex` would compile it forever


ALTERED = {"over-cap": _over_cap, "nan-weights": _nan_weights, "backtracking": _backtracking,
           "compile-bomb": _compile_bomb}  # fmt: skip
ALTERED["overflows-at-run-time"] = lambda config, tensors: None  # see _overflowing


def _altered(src: Path, dst: Path, change) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    tensors = load_file(str(dst / "adapter_model.safetensors"))
    change(config, tensors)
    (dst / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(dst / "adapter_model.safetensors"))
    return dst


@pytest.fixture(scope="module")
def specs(published, tmp_path_factory) -> dict[str, AdapterSpec]:
    """The hostile adapters and a well-formed one ("good"), by name."""
    root = tmp_path_factory.mktemp("hostile")
    good = published.registry.resolve(published.adapters[1])
    out = {"good": AdapterSpec("good", good.repo_id, good.sha, Path(good.path), rank=4)}
    for i, (name, change) in enumerate(ALTERED.items()):
        folder = _altered(Path(good.path), root / name, change)
        out[name] = AdapterSpec(name, f"hostile/{name}", f"{i:040x}", folder, rank=4)
    return out


# ---- engines on one long-lived event loop (the process engine's reader needs one) ---------
@pytest.fixture(scope="module")
def loop():
    with background_loop() as loop:
        yield loop


def _run(loop, coro, timeout: float = 60):
    return run_on(loop, coro, timeout)


@pytest.fixture(scope="module")
def engines(published, loop):
    options = PeftEngineConfig(dtype="float32", max_loaded=2, max_batch_size=8, torch_threads=1)
    built = {
        "in-process": PeftEngine(published.base.path, options, base_name=BASE_ID),
        "process": ProcessEngine(published.base.path, options, base_name=BASE_ID),
    }
    for engine in built.values():
        _run(loop, engine.start(), timeout=300)
    yield built
    for engine in built.values():
        _run(loop, engine.shutdown())


def _request(tag: str, adapter: AdapterSpec | None, **sampling) -> GenerationRequest:
    return GenerationRequest(tag, PROMPT, SamplingParams(**sampling), adapter, stream=False)


async def _text(engine, request: GenerationRequest) -> str:
    return "".join([chunk.text async for chunk in engine.generate(request)])


async def _side_by_side(engine, hostile: GenerationRequest, good: GenerationRequest):
    """Both requests sent at the same moment: the hostile one's text or error, the good one's."""
    return await asyncio.gather(_text(engine, hostile), _text(engine, good), return_exceptions=True)


# ---- the table ----------------------------------------------------------------------------
# (id, adapter, sampling, expected: None = the greedy text of the adapter, else (type, text))
CASES = [
    ("tiny-temperature", "good", {"temperature": 1e-40, "max_tokens": 8}, None),
    ("huge-seed", None, {"temperature": 0.7, "seed": 2**64}, (RequestError, "seed=1844674")),
    ("negative-seed", None, {"temperature": 0.7, "seed": -1}, (RequestError, "seed=-1")),
    ("nan-temperature", None, {"temperature": float("nan")}, (RequestError, "temperature=nan")),
    ("zero-top-p", None, {"temperature": 0.7, "top_p": 0.0}, (RequestError, "top_p=0.0")),
    ("rank-over-cap", "over-cap", GREEDY, (IncompatibleAdapterError, "rank 128 is over")),
    ("nan-weights", "nan-weights", GREEDY, (IncompatibleAdapterError, "NaN or inf")),
    ("backtracking-targets", "backtracking", GREEDY,
     (IncompatibleAdapterError, "catastrophic backtracking")),
    ("compile-bomb-targets", "compile-bomb", GREEDY,
     (IncompatibleAdapterError, "counted repetitions multiply")),
    ("nan-logits", "overflows-at-run-time", {"temperature": 0.7, "max_tokens": 8},
     (GenerationError, "not finite")),
]  # fmt: skip
ON_THE_PROCESS_ENGINE = ("tiny-temperature", "huge-seed", "rank-over-cap", "backtracking-targets")


def _overflowing(engine: PeftEngine, spec: AdapterSpec, monkeypatch) -> None:
    """Attaching ``spec`` writes NaN into its slot after the check passed (an overflow at run
    time, as a float16 model can meet): its rows' logits are NaN, the batch's others not."""
    cache = engine._cache
    attach = cache._attach
    lora = engine._scheduler.runner.lora

    def poisoned(slot, weights):
        attach(slot, weights)
        mine = cache.peek(spec)
        if mine is not None and weights is mine.weights:
            for layer in lora.layers.values():
                layer.A[slot].fill_(float("nan"))

    monkeypatch.setattr(cache, "_attach", poisoned)


def _check_case(engine, loop, specs, case) -> None:
    _, adapter, sampling, expected = case
    hostile = _request("hostile", specs.get(adapter), **sampling)
    good = _request("good", specs["good"], **GREEDY)
    alone = _run(loop, _text(engine, good))
    got, good_text = _run(loop, _side_by_side(engine, hostile, good))
    assert good_text == alone  # the well-formed request, batched with it, is untouched
    if expected is None:
        assert got == _run(loop, _text(engine, _request("greedy", specs.get(adapter), **GREEDY)))
    else:
        kind, fragment = expected
        assert isinstance(got, kind) and fragment in str(got), repr(got)
    stats = settled(engine)
    assert stats["running"] == 0 and stats["queue_depth"] == 0


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_fails_alone_in_process(engines, loop, specs, case, monkeypatch):
    engine = engines["in-process"]
    poisoned = case[1] == "overflows-at-run-time"
    if poisoned:
        _overflowing(engine, specs[case[1]], monkeypatch)
    try:
        _check_case(engine, loop, specs, case)
    finally:
        if poisoned:  # its slot holds NaN: free it for the next cases
            _run(loop, engine.unload(case[1]))
    assert not engine._cache._pins  # every pin released, the failed rows' too


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[0] in ON_THE_PROCESS_ENGINE], ids=ON_THE_PROCESS_ENGINE
)
def test_hostile_request_fails_alone_in_the_engine_process(engines, loop, specs, case):
    _check_case(engines["process"], loop, specs, case)


@pytest.mark.parametrize(
    ("failing", "survivor"),
    [("prefill", True), ("decode", False)],
    ids=["prefill-fails-its-group", "decode-fails-its-rows"],
)
def test_failed_forward_fails_only_the_rows_in_it(
    engines, loop, specs, monkeypatch, failing, survivor
):
    """A forward that raises (out of memory, a device error) fails the requests it ran: a
    prefill only the arrivals in it (the running batch goes on), a decode step every running
    row; their pins are released and the engine serves the next request."""
    engine = engines["in-process"]
    runner = engine._scheduler.runner
    forward = runner._forward
    armed = threading.Event()

    def flaky(ids, mask, positions, past, slots, keep=1):
        if armed.is_set() and (past is None) == (failing == "prefill"):
            armed.clear()
            raise RuntimeError("simulated out of memory")
        return forward(ids, mask, positions, past, slots, keep)

    monkeypatch.setattr(runner, "_forward", flaky)
    long = GenerationRequest("long", PROMPT, SamplingParams(**{**GREEDY, "max_tokens": 40}),
                             specs["good"])  # fmt: skip
    alone = _run(loop, _text(engine, long))

    async def main():
        stream = engine.generate(long)
        text = (await anext(stream)).text  # running now
        armed.set()
        # A prefill fails for a request arriving while ``long`` runs; a decode step fails
        # ``long`` itself, and a request sent after it runs as usual.
        late = _text(engine, _request("late", specs["good"], **GREEDY))
        concurrent = asyncio.ensure_future(late) if failing == "prefill" else None
        try:
            text += "".join([chunk.text async for chunk in stream])
        except RuntimeError as exc:
            text = exc
        after = concurrent if concurrent is not None else late
        return text, (await asyncio.gather(after, return_exceptions=True))[0]

    text, late = _run(loop, main())
    if survivor:  # the running request goes on; the late one's prefill failed
        assert text == alone and isinstance(late, RuntimeError)
    else:  # the decode step failed every running row; the late one came after and runs
        assert isinstance(text, RuntimeError) and isinstance(late, str) and late
    assert "simulated" in str(late if survivor else text)
    settled(engine)
    assert not engine._cache._pins
    assert _run(loop, _text(engine, long)) == alone  # the engine serves on
