"""Workloads and measuring tools of ``bench/serving.py``: the model of a shape and its
adapters in a temporary registry, the device and dtype, an in-process server, RSS and GPU
memory (the clients that load the servers: ``serving_clients.py``; the rows without HTTP:
``serving_baselines.py``).

Every model the bench runs (each server's engine, the offline baselines) is placed on
``BenchSetup.device`` in ``BenchSetup.dtype``, so all rows compare like with like."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.serving_clients import client_pids
from loradock.serving.peft_config import DTYPES as SERVER_DTYPES

DEVICES = ("cpu", "cuda")
DTYPES = tuple(d for d in SERVER_DTYPES if d != "auto")  # the bench names one for every row
# Issue 17's goals, on SmolLM2-135M's shape on a CPU: (a) endpoint / offline merged, (b) 16
# adapters / 1, (c) cold / loaded TTFT, (d) batching / one at a time, (e) 256 adapters / 8,
# (l) the engine's decode step against the linear-layer limit.
GOALS = {"a": 1.3, "b": 0.95, "c": 1.5, "d": 5.0, "e": 0.8, "l": 0.5}
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
    of_limit: float | None = None  # tokens/s rows: the fraction of the linear-layer limit


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
    shape: str = "toy"
    model: str = ""  # what the weights are, for the results
    rank: int = 8  # every adapter's LoRA rank
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
    dtype = dtype or served_dtype(device)
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


def served_dtype(device: str) -> str:
    """What ``loradock serve --dtype auto`` runs on ``device``: bf16 on a GPU or on a CPU with
    bf16 matmuls (AVX-512 BF16, AMX), else float32. The bench measures what a user gets."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "bfloat16"  # resolve_device refuses the device itself
    from loradock.modeling import pick_dtype

    return str(pick_dtype(device, "auto")).removeprefix("torch.")


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
def _clone_adapter(src: Path, dst: Path, seed: int, dtype: str) -> Path:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "adapter_model.safetensors":
            shutil.copy(f, dst / f.name)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file(  # in the served dtype: 256 SmolLM2-shape adapters in float32 would be 5 GB
        {
            k: (torch.randn(v.shape, generator=gen) * v.float().std()).to(getattr(torch, dtype))
            for k, v in tensors.items()
        },
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
    shape: str = "toy",
) -> BenchSetup:
    from rich.console import Console
    from rich.progress import track

    from bench.model_shapes import adapter_shape, build_base
    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card, build_base_card
    from loradock.settings import Settings
    from loradock.tiny import make_tiny_adapter

    base_dir, model = build_base(shape, root / "base", quick=quick)
    lora = adapter_shape(shape)
    first = make_tiny_adapter(
        base_dir, root / "src-0", r=lora.r, target_modules=lora.target_modules
    )
    settings = Settings(
        home=root, hub_dir=root / "hub", index_path=root / "index.sqlite", cache_dir=root / "snap"
    )
    registry = Registry.open(settings)
    registry.publish_base(base_dir, "bench/base", card=build_base_card())
    names = []
    progress = Console(stderr=True)  # stdout carries the table or the JSON only
    for i in track(range(n_adapters), "publishing adapters", transient=True, console=progress):
        folder = first if i == 0 else _clone_adapter(first, root / f"src-{i}", seed=i, dtype=dtype)
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
        shape=shape,
        model=model,
        rank=lora.r,
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
            engine="peft",
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


def best_of(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``REPEATS`` runs: other processes on a shared machine only slow runs down."""
    return max((run() for _ in range(REPEATS)), key=lambda r: r["tps"])


def _prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(n)]


def _preload(url: str, names: list[str]) -> None:
    import httpx

    for name in names:
        httpx.post(f"{url}/v1/adapters/load", json={"model": name}, timeout=120).raise_for_status()
