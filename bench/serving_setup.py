"""Workloads and measuring tools of ``bench/serving.py``: the tiny model and its adapters in a
temporary registry, an in-process server, offline generation, RSS (the clients that load the
servers: ``serving_clients.py``).

Every model the bench runs (each server's engine, the offline merged baseline) is placed on
``BenchSetup.device`` in ``BenchSetup.dtype``, so all rows compare like with like."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.serving_clients import client_pids
from loradock.serving.config import DTYPES as SERVER_DTYPES

DEVICES = ("cpu", "cuda")
DTYPES = tuple(d for d in SERVER_DTYPES if d != "auto")  # the bench names one for every row
DEFAULT_DTYPES = {"cpu": "float32", "cuda": "bfloat16"}
REPEATS = 2  # throughput figures keep the best of this many runs (noise from other processes)
PROMPTS = [
    "Convert the date 3 March 2024 to ISO format:",
    "The capital of France is",
    'Extract the JSON: name Ada Lovelace, city London -> {"name":',
    "Question: what is two plus two? Answer:",
    "You are a helpful assistant. Summarize: the meeting moved to Tuesday.",
    "Translate to French: good morning, my friend.",
    "List three colors:",
    "Write a haiku about the sea:",
]


@dataclass
class Row:
    key: str
    label: str
    value: float
    unit: str = "x"
    goal: str = ""
    ok: bool | None = None
    detail: str = ""
    rss_mib: float | None = None
    gpu_mib: float | None = None  # peak CUDA memory allocated, where it is measured


@dataclass
class BenchSetup:
    root: Path
    registry: Any
    base: Any  # ResolvedModel
    adapters: list[str]
    quick: bool
    threads: int
    max_tokens: int
    clients: int
    device: str = "cpu"
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


# ---- device ------------------------------------------------------------------------------
def resolve_device(device: str, dtype: str | None = None) -> tuple[str, str]:
    """``(device, dtype)`` every row runs on, checked before any work starts: a missing GPU is
    one clear error here, not a traceback deep in torch minutes into the run."""
    from loradock.errors import ConfigError

    problems = []
    if device not in DEVICES:
        problems.append(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if problems:
        raise ConfigError("Invalid bench options", problems)
    dtype = dtype or DEFAULT_DTYPES[device]
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"--device {device!r} needs a CUDA GPU, but torch {torch.__version__} sees none "
                "(torch.cuda.is_available() is False): run on a machine with an NVIDIA GPU and "
                "a CUDA build of torch, or use --device cpu"
            )
        elif dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            problems.append(
                f"--dtype {dtype!r}: {torch.cuda.get_device_name()} has no bfloat16: "
                "use --dtype float16 or --dtype float32"
            )
    if problems:
        raise ConfigError("Invalid bench options", problems)
    return device, dtype


def device_name(device: str) -> str | None:
    """The GPU's name for the results (``None`` on the CPU)."""
    if device != "cuda":
        return None
    import torch

    return torch.cuda.get_device_name()


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timer read after it counts that work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# ---- setup -------------------------------------------------------------------------------
def _clone_adapter(src: Path, dst: Path, seed: int) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "adapter_model.safetensors":
            shutil.copy(f, dst / f.name)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file(
        {k: torch.randn(v.shape, generator=gen) * v.float().std() for k, v in tensors.items()},
        str(dst / "adapter_model.safetensors"),
    )
    return dst


def build_setup(
    root: Path,
    *,
    quick: bool,
    threads: int,
    n_adapters: int,
    device: str = "cpu",
    dtype: str = "float32",
) -> BenchSetup:
    from rich.console import Console
    from rich.progress import track

    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card, build_base_card
    from loradock.settings import Settings
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    # Head size 32 (quick) or 64: sizes vLLM's CPU attention supports, for S2's rows.
    hidden, layers, heads = (64, 2, 2) if quick else (256, 4, 4)
    base_dir = make_tiny_base(
        root / "base",
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=heads // 2,
        intermediate_size=hidden * 2,
    )
    first = make_tiny_adapter(
        base_dir, root / "src-0", r=8, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
    )
    settings = Settings(
        home=root, hub_dir=root / "hub", index_path=root / "index.sqlite", cache_dir=root / "snap"
    )
    registry = Registry.open(settings)
    registry.publish_base(base_dir, "bench/base", card=build_base_card())
    names = []
    progress = Console(stderr=True)  # stdout carries the table or the JSON only
    for i in track(range(n_adapters), "publishing adapters", transient=True, console=progress):
        folder = first if i == 0 else _clone_adapter(first, root / f"src-{i}", seed=i)
        card = build_adapter_card(base_model="bench/base")
        names.append(registry.publish(folder, f"bench/lora-{i:03d}", card=card).repo_id)
    return BenchSetup(
        root=root,
        registry=registry,
        base=registry.resolve_base("bench/base"),
        adapters=names,
        quick=quick,
        threads=threads,
        max_tokens=16 if quick else 32,
        clients=8 if quick else 32,
        device=device,
        dtype=dtype,
    )


# ---- measuring ---------------------------------------------------------------------------
class PeakRss:
    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.peak = self.start = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        """This process and its children (an engine process: PEFT's or vLLM's engine core)."""
        import psutil

        total = self.proc.memory_info().rss
        clients = client_pids()  # not the server's
        for child in self.proc.children(recursive=True):
            if child.pid in clients:
                continue
            with contextlib.suppress(psutil.Error):  # a child may exit between the calls
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class GpuPeak:
    """Peak CUDA memory torch allocated in this process inside the block (MiB; ``None`` off
    the GPU). It sees in-process engines only: a server's engine process has its own."""

    def __init__(self, device: str):
        self.device = device
        self.mib: float | None = None

    def __enter__(self) -> GpuPeak:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.mib = round(torch.cuda.max_memory_allocated() / 2**20, 1)


class Server:
    """A PEFT server for ``setup`` on a free port, in this process."""

    def __init__(self, setup: BenchSetup, **options: Any):
        from loradock.serving.config import ServerConfig
        from loradock.serving.http.app import create_app
        from loradock.serving.http.background import BackgroundServer
        from loradock.serving.server import build_engine

        options.setdefault("max_model_len", 256)
        config = ServerConfig.from_options(
            base="bench/base",
            dtype=setup.dtype,
            device=setup.device,
            port=0,
            torch_threads=setup.threads,
            **options,
        )
        engine = build_engine(config, setup.base.path)
        self.app = create_app(engine, registry=setup.registry, config=config, base=setup.base)
        self.engine = engine
        self._server = BackgroundServer(self.app)

    def __enter__(self) -> Server:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


def offline_merged_tps(setup: BenchSetup, prompts: list[str], max_tokens: int) -> float:
    """Offline batched generation with the adapter merged into the base (no server, no PEFT)."""
    import torch
    from peft import PeftModel

    from loradock.modeling import load_base
    from loradock.serving.engines.peft.attention import use_grouped_attention

    torch.set_num_threads(setup.threads)
    model, tok = load_base(setup.base.path, dtype=setup.dtype, device=setup.device)
    adapter = setup.registry.resolve(setup.adapters[0]).path
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    # The server's attention too (grouped GQA heads; float32 maths for bf16 on a CPU, where
    # torch's masked SDPA is 4-6x slower): (a) then compares serving overhead, not attention.
    use_grouped_attention(merged)
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True).to(setup.device)
    kw = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
    best = 0.0
    with torch.inference_mode():
        merged.generate(**batch, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
        for _ in range(REPEATS):
            synchronize(setup.device)
            t0 = time.perf_counter()
            out = merged.generate(**batch, **kw, pad_token_id=tok.pad_token_id)
            synchronize(setup.device)
            wall = time.perf_counter() - t0
            best = max(best, (out.shape[1] - batch["input_ids"].shape[1]) * len(prompts) / wall)
    return best


def engine_tps(
    setup: BenchSetup, jobs: list[tuple[str, str]], *, max_tokens: int, max_batch_size: int
) -> float:
    """Tokens/s of the PEFT engine driven directly (no HTTP, no client, in this process):
    ``jobs`` submitted all at once, each adapter resolved and attached beforehand."""
    from loradock.serving.config import ServerConfig
    from loradock.serving.engines.base import AdapterSpec, GenerationRequest, SamplingParams
    from loradock.serving.server import build_engine

    config = ServerConfig.from_options(
        base="bench/base",
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
        specs[name] = AdapterSpec(name=name, repo_id=r.repo_id, sha=r.sha, path=r.path, rank=8)

    async def run() -> float:
        await engine.start()
        try:
            for spec in specs.values():
                await engine.load(spec)

            async def one(i: int, model: str, prompt: str, tokens: int) -> int:
                sampling = SamplingParams(max_tokens=tokens, temperature=0)
                request = GenerationRequest(str(i), prompt, sampling, specs[model], stream=False)
                done = 0
                async for chunk in engine.generate(request):
                    done = chunk.completion_tokens
                return done

            await asyncio.gather(*(one(i, m, p, 4) for i, (m, p) in enumerate(jobs)))  # warm-up
            best = 0.0
            for _ in range(REPEATS):
                started = time.perf_counter()
                counts = await asyncio.gather(
                    *(one(i, m, p, max_tokens) for i, (m, p) in enumerate(jobs))
                )
                best = max(best, sum(counts) / (time.perf_counter() - started))
            return best
        finally:
            await engine.shutdown()

    return asyncio.run(run())


def best_of(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``REPEATS`` runs: other processes on a shared machine only slow runs down."""
    return max((run() for _ in range(REPEATS)), key=lambda r: r["tps"])


def _prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(n)]


def _preload(url: str, names: list[str]) -> None:
    import httpx

    for name in names:
        httpx.post(f"{url}/v1/adapters/load", json={"model": name}, timeout=120).raise_for_status()
