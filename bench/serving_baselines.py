"""The rows of ``bench/serving.py`` measured without HTTP, on the bench's prompts, device and
dtype: offline ``transformers`` generate of a merged model, PEFT's own mixed-adapter batch
(``adapter_names``), and the PEFT engine driven directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.serving_setup import REPEATS, BenchSetup, synchronize


def offline_merged_tps(setup: BenchSetup, prompts: list[str], max_tokens: int) -> float:
    """Offline batched generation with the adapter merged into the base (no server, no PEFT)."""
    from peft import PeftModel

    from loradock.modeling import load_base

    model, tok = load_base(setup.base.path, dtype=setup.dtype, device=setup.device)
    adapter = setup.registry.resolve(setup.adapters[0]).path
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    return _generate_tps(setup, merged, tok, prompts, max_tokens)


def adapter_names_tps(setup: BenchSetup, jobs: list[tuple[str, str]], max_tokens: int) -> float:
    """PEFT's own mixed-adapter batch: one ``PeftModel`` holding every adapter of ``jobs``,
    ``generate(..., adapter_names=[...])`` routing each row through its own."""
    from peft import PeftModel

    from loradock.modeling import load_base

    model, tok = load_base(setup.base.path, dtype=setup.dtype, device=setup.device)
    names = list(dict.fromkeys(name for name, _ in jobs))
    paths = {name: str(setup.registry.resolve(name).path) for name in names}
    key = {name: f"a{i}" for i, name in enumerate(names)}  # PEFT's names: no '/'
    peft = PeftModel.from_pretrained(model, paths[names[0]], adapter_name=key[names[0]])
    for name in names[1:]:
        peft.load_adapter(paths[name], adapter_name=key[name])
    rows = [key[name] for name, _ in jobs]
    return _generate_tps(
        setup, peft.eval(), tok, [p for _, p in jobs], max_tokens, adapter_names=rows
    )


def _generate_tps(
    setup: BenchSetup, model, tok, prompts: list[str], max_tokens: int, **extra
) -> float:
    """The best tokens/s of ``REPEATS`` batched greedy ``generate`` calls, after a warm-up."""
    import torch

    from loradock.serving.engines.peft.attention import use_grouped_attention

    torch.set_num_threads(setup.threads)
    # The server's attention too (grouped GQA heads; float32 maths for bf16 on a CPU, where
    # torch's masked SDPA is 4-6x slower): rows then compare serving overhead, not attention.
    use_grouped_attention(model.get_base_model() if hasattr(model, "get_base_model") else model)
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True).to(setup.device)
    kw = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, **extra)
    best = 0.0
    with torch.inference_mode():
        model.generate(**batch, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        for _ in range(REPEATS):
            synchronize(setup.device)
            t0 = time.perf_counter()
            out = model.generate(**batch, **kw, pad_token_id=tok.pad_token_id)
            synchronize(setup.device)
            wall = time.perf_counter() - t0
            best = max(best, (out.shape[1] - batch["input_ids"].shape[1]) * len(prompts) / wall)
    return best


def engine_tps(
    setup: BenchSetup, jobs: list[tuple[str, str]], *, max_tokens: int, max_batch_size: int
) -> float:
    """Tokens/s of the PEFT engine driven directly (no HTTP, no client, in this process):
    ``jobs`` submitted all at once, each adapter resolved and attached beforehand."""
    run = engine_requests(setup, jobs, max_tokens=max_tokens, max_batch_size=max_batch_size)
    return asyncio.run(run)


async def engine_requests(
    setup: BenchSetup,
    jobs: list[tuple[str, str]],
    *,
    max_tokens: int,
    max_batch_size: int = 32,
    repeats: int = REPEATS,
    measuring: Callable[[], None] | None = None,
) -> float:
    """An in-process PEFT engine for ``setup``: its adapters attached, a warm-up run of
    ``jobs``, then the best tokens/s of ``repeats`` runs (``measuring`` is called before them)."""
    from loradock.serving.config import ServerConfig
    from loradock.serving.engines.base import AdapterSpec, GenerationRequest, SamplingParams
    from loradock.serving.server import build_engine

    config = ServerConfig.from_options(
        base="bench/base",
        engine="peft",
        dtype=setup.dtype,
        device=setup.device,
        torch_threads=setup.threads,
        max_batch_size=max_batch_size,
        max_model_len=256,
        engine_process=False,
    )
    engine = build_engine(config, setup.base.path)
    specs = {}
    for name in {model for model, _ in jobs}:
        r = setup.registry.resolve(name)
        specs[name] = AdapterSpec(
            name=name, repo_id=r.repo_id, sha=r.sha, path=r.path, rank=setup.rank
        )

    async def one(i: int, model: str, prompt: str, tokens: int) -> int:
        sampling = SamplingParams(max_tokens=tokens, temperature=0)
        request = GenerationRequest(str(i), prompt, sampling, specs[model], stream=False)
        done = 0
        async for chunk in engine.generate(request):
            done = chunk.completion_tokens
        return done

    await engine.start()
    try:
        for spec in specs.values():
            await engine.load(spec)
        await asyncio.gather(*(one(i, m, p, 4) for i, (m, p) in enumerate(jobs)))  # warm-up
        if measuring is not None:
            measuring()
        best = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            counts = await asyncio.gather(
                *(one(i, m, p, max_tokens) for i, (m, p) in enumerate(jobs))
            )
            best = max(best, sum(counts) / (time.perf_counter() - started))
        return best
    finally:
        await engine.shutdown()
