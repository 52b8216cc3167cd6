"""Serving figures as ratios, measured side by side in one run: ``python -m bench.serving``.

One process builds a tiny-but-not-trivial Llama model (``loradock.tiny``, hidden 256, 4 layers),
publishes LoRA adapters for it into a temporary LocalHub, then runs the PEFT server (uvicorn
on 127.0.0.1, driven by the real ``openai`` client from a separate client process, as real
clients are) against baselines on the same prompts:

(a) HTTP throughput, 32 concurrent clients over 8 adapters / offline batched generation of the
    merged model (goal >= 0.8)
(b) 16 distinct adapters in one batch / one adapter (goal >= 0.9)
(c) time to first token, an adapter not yet loaded / a loaded one, under the same load (<= 1.5)
(d) the batching server / a server handling one request at a time (goal >= 5)
(e) throughput and peak RSS as distinct adapters grow (1, 8, 64, 256), slots fixed at 8

    python -m bench.serving                 # full run: table + bench/results/serving.{json,png}
    python -m bench.serving --quick --json  # smoke-test sizes
    python -m bench.serving --runs 3        # each figure the median of 3 runs (noisy machine)
    python -m bench.serving --device cuda   # every row on the GPU (bf16): serving-cuda.json

``--device``/``--dtype`` place every model of every row (servers, in-process engines, the
offline merged baseline) on one device in one dtype, so the ratios compare like with like; a
non-CPU device writes its own files (``serving-cuda.json``, ``serving_ratios-cuda.png``), so
the CPU results stay.

Other engines add rows through ``EXTRA_ROWS`` (S2: vLLM): each hook gets the ``BenchSetup``
and returns ``Row``s; ``bench.serving_vllm`` is imported if it exists and may append hooks
(they run when ``--only`` holds ``v``, as by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench.serving_clients import drive, drive_apart
from bench.serving_setup import (  # noqa: F401  (re-exported: bench.serving_vllm uses them)
    DEVICES,
    DTYPES,
    PROMPTS,
    BenchSetup,
    GpuPeak,
    PeakRss,
    Row,
    Server,
    _preload,
    _prompts,
    best_of,
    build_setup,
    device_name,
    engine_tps,
    offline_merged_tps,
    resolve_device,
)
from loradock.errors import ConfigError

# Before anything imports huggingface_hub (the helpers import it lazily): never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS_DIR = Path(__file__).parent / "results"
EXTRA_ROWS: list[Callable[[BenchSetup], list[Row]]] = []


# ---- the figures -------------------------------------------------------------------------
def bench_throughput(setup: BenchSetup) -> list[Row]:
    """(a) vs offline merged and (d) vs one request at a time: one workload, three runs."""
    n, t, rounds = setup.clients, setup.max_tokens, 2
    prompts = _prompts(n)
    eight = setup.adapters[:8]
    jobs = [(eight[i % 8], prompts[i % n]) for i in range(n * rounds)]
    offline = offline_merged_tps(setup, prompts, t)
    with Server(setup, max_loaded=8, max_batch_size=n) as srv:
        _preload(srv.url, eight)
        drive_apart(srv.url, jobs[:n], concurrency=n, max_tokens=4)  # warm-up
        batched = best_of(lambda: drive_apart(srv.url, jobs, concurrency=n, max_tokens=t))
    with Server(setup, max_loaded=8, max_batch_size=1) as srv:
        _preload(srv.url, eight)
        serial_jobs = jobs[: max(8, len(jobs) // 4)]  # fewer: it is slow; tokens/s compares
        serial = best_of(lambda: drive_apart(srv.url, serial_jobs, concurrency=n, max_tokens=t))
    # The same comparison without HTTP: the engine driven directly, batching or not. What
    # (d) loses against it is the HTTP work (server and clients) sharing this machine's CPUs.
    with GpuPeak(setup.device) as gpu:  # the engine in this process: its memory is ours
        engine_batched = engine_tps(setup, jobs, max_tokens=t, max_batch_size=n)
    engine_serial = engine_tps(setup, jobs[: len(serial_jobs)], max_tokens=t, max_batch_size=1)
    a = batched["tps"] / offline
    d = batched["tps"] / serial["tps"]
    d_engine = engine_batched / engine_serial
    return [
        Row("a_http_vs_offline_merged", f"(a) HTTP, {n} clients over 8 adapters / offline merged batch",
            a, goal=">= 0.8", ok=a >= 0.8,
            detail=f"{batched['tps']:.0f} vs {offline:.0f} tok/s"),
        Row("d_batched_vs_one_at_a_time", "(d) batching server / one request at a time",
            d, goal=">= 5", ok=d >= 5,
            detail=f"{batched['tps']:.0f} vs {serial['tps']:.0f} tok/s"),
        Row("d_engine_only", "(d, engine alone) batching / one at a time, no HTTP", d_engine,
            detail=f"{engine_batched:.0f} vs {engine_serial:.0f} tok/s"
                   + (f", peak GPU memory {gpu.mib:.0f} MiB" if gpu.mib is not None else ""),
            gpu_mib=gpu.mib),
    ]  # fmt: skip


def bench_distinct_adapters(setup: BenchSetup) -> list[Row]:
    """(b) 16 distinct adapters in one batch / one adapter, same prompts, same server."""
    n, t, rounds = 16, setup.max_tokens, 3
    prompts = _prompts(n)
    sixteen = setup.adapters[:16]
    with Server(setup, max_loaded=16, max_batch_size=16) as srv:
        _preload(srv.url, sixteen)
        one_jobs = [(sixteen[0], prompts[i % n]) for i in range(n * rounds)]
        mixed_jobs = [(sixteen[i % n], prompts[i % n]) for i in range(n * rounds)]
        drive_apart(srv.url, mixed_jobs[:n], concurrency=n, max_tokens=4)  # warm-up
        one = best_of(lambda: drive_apart(srv.url, one_jobs, concurrency=n, max_tokens=t))
        mixed = best_of(lambda: drive_apart(srv.url, mixed_jobs, concurrency=n, max_tokens=t))
    b = mixed["tps"] / one["tps"]
    return [
        Row("b_16_adapters_vs_1", "(b) 16 distinct adapters in one batch / one adapter", b,
            goal=">= 0.9", ok=b >= 0.9, detail=f"{mixed['tps']:.0f} vs {one['tps']:.0f} tok/s"),
    ]  # fmt: skip


def bench_cold_ttft(setup: BenchSetup) -> list[Row]:
    """(c) TTFT of a never-loaded adapter / a loaded one while 4 loaded adapters keep busy."""
    samples = 4 if setup.quick else 16
    busy = setup.adapters[:4]
    cold = setup.adapters[16 : 16 + samples]
    warm = setup.adapters[4]
    with Server(setup, max_loaded=8, max_batch_size=64) as srv:
        _preload(srv.url, [*busy, warm])
        stop = threading.Event()

        def background() -> None:
            # 16 clients in client processes (drive_apart), as in (a): run in this process,
            # their Python work would compete with the server's for its GIL.
            jobs = [(busy[i % 4], PROMPTS[i % 8]) for i in range(16 * 4)]
            while not stop.is_set():
                drive_apart(srv.url, jobs, concurrency=16, max_tokens=setup.max_tokens,
                            start_delay=0.0)  # fmt: skip

        thread = threading.Thread(target=background, daemon=True)
        thread.start()
        time.sleep(1.0)
        cold_t, warm_t = [], []
        # The background clients run in lock-step rounds, so the load comes in bursts; a probe
        # sent right after the previous one would meet them at a phase set by the probes'
        # own durations (a cold probe is a few ms longer), not at random. A random pause
        # before each probe gives both kinds the same mix of load.
        jitter = random.Random(0)
        for i in range(samples):
            for name, out in ((cold[i], cold_t), (warm, warm_t)):
                time.sleep(jitter.uniform(0.0, 0.1))
                r = asyncio.run(drive(srv.url, [(name, PROMPTS[i % 8])], concurrency=1,
                                      max_tokens=4, stream=True))  # fmt: skip
                out.append(r["ttfts"][0])
        stop.set()
        thread.join()
    c = statistics.median(cold_t) / statistics.median(warm_t)
    return [
        Row("c_ttft_cold_vs_loaded", "(c) TTFT not-yet-loaded / loaded adapter, under load", c,
            goal="<= 1.5", ok=c <= 1.5,
            detail=f"median {statistics.median(cold_t) * 1000:.0f} vs "
                   f"{statistics.median(warm_t) * 1000:.0f} ms ({samples} each)"),
    ]  # fmt: skip


def bench_scaling(setup: BenchSetup, counts: list[int]) -> list[Row]:
    """(e) throughput and peak RSS as the workload's distinct adapters grow, 8 slots."""
    rows = []
    n_req = max(counts) if not setup.quick else max(32, max(counts))
    for count in counts:
        names = setup.adapters[:count]
        jobs = [(names[i % count], PROMPTS[i % 8]) for i in range(n_req)]
        with Server(setup, max_loaded=8, max_batch_size=32) as srv, PeakRss() as rss:
            # Each count gets a fresh engine process: without a warm-up, its first steps (on a
            # GPU: CUDA context, cuBLAS handles, ~1 s) would count against the first row only.
            drive_apart(srv.url, jobs[:8], concurrency=8, max_tokens=2)
            r = drive_apart(srv.url, jobs, concurrency=32, max_tokens=16)
            stats = srv.engine.stats()
        rows.append(
            Row(
                f"e_adapters_{count}",
                f"(e) {count} distinct adapters, 8 slots",
                r["tps"],
                unit="tok/s",
                detail=f"peak RSS {rss.peak / 2**20:.0f} MiB, evictions "
                f"{stats.get('adapter_evictions', 0):.0f}, in CPU "
                f"{stats.get('adapters_in_cpu', 0):.0f}",
            )  # fmt: skip
        )
        rows[-1].rss_mib = round(rss.peak / 2**20, 1)
    return rows


# ---- output ------------------------------------------------------------------------------
def plot(rows: list[Row], out_dir: Path, *, suffix: str = "", device: str = "cpu") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ratios = [r for r in rows if r.unit == "x"]
    if ratios:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh([r.label.split(")")[0] + ")" for r in ratios], [r.value for r in ratios],
                color=["tab:gray" if r.ok is None else "tab:green" if r.ok else "tab:red"
                       for r in ratios])  # fmt: skip
        for i, r in enumerate(ratios):
            goal = f" (goal {r.goal})" if r.goal else " (no goal: context)"
            ax.text(r.value, i, f" {r.value:.2f}{goal}", va="center")
        ax.set_xlabel("ratio")
        ax.set_title(f"loradock serving on {device}: ratios measured in one run")
        fig.tight_layout()
        paths.append(out_dir / f"serving_ratios{suffix}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    scaling = [r for r in rows if r.key.startswith("e_")]
    if scaling:
        counts = [int(r.key.rsplit("_", 1)[1]) for r in scaling]
        fig, ax1 = plt.subplots(figsize=(6, 3.5))
        ax1.plot(counts, [r.value for r in scaling], "o-", color="tab:blue")
        ax1.set_xscale("log", base=2)
        ax1.set_xlabel("distinct adapters in the workload (8 slots)")
        ax1.set_ylabel("tokens/s", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(counts, [r.rss_mib or 0 for r in scaling], "s--", color="tab:red")
        ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
        fig.tight_layout()
        paths.append(out_dir / f"serving_scaling{suffix}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (tiny model)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (all runs)")
    parser.add_argument(
        "--device", default="cpu", choices=DEVICES, help="where every model runs (cpu)"
    )
    parser.add_argument("--dtype", choices=DTYPES, help="default: float32 on cpu, bfloat16 on cuda")
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat the figures; the table shows medians"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--only", default="abcdev", help="which figures, e.g. 'ae' ('v': other engines' rows)"
    )
    args = parser.parse_args(argv)
    try:
        args.device, args.dtype = resolve_device(args.device, args.dtype)
    except ConfigError as exc:
        parser.error(str(exc))  # exit status 2, before any work: nothing half done
    # Stdout carries only the table or the JSON: anything printed while measuring goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        rows, seconds = _measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = device_suffix(args.device)
    plots = plot(rows, args.out, suffix=suffix, device=args.device)
    result = {
        "bench": "serving",
        "quick": args.quick,
        "device": args.device,
        "dtype": args.dtype,
        "gpu": device_name(args.device),
        "threads": args.threads,
        "runs": args.runs,
        "seconds": seconds,
        "rows": [asdict(r) for r in rows],
        "plots": [str(p) for p in plots],
    }
    name = f"serving{suffix}{'-quick' if args.quick else ''}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from loradock.cli._common import print_table

        print_table(
            f"serving ({'quick' if args.quick else 'full'}, {args.device} {args.dtype}, "
            f"{seconds} s)",
            ["figure", "value", "goal", "ok", "detail"],
            [(r.label, f"{r.value:.2f} {r.unit}", r.goal, r.ok, r.detail) for r in rows],
        )
    return 0


def device_suffix(device: str) -> str:
    """``""`` on the CPU (the committed results keep their names), else ``"-<device>"``: a GPU
    run never overwrites the CPU's files."""
    return "" if device == "cpu" else f"-{device}"


def median_rows(runs: list[list[Row]]) -> list[Row]:
    """Each figure's median over whole runs of the bench (the machine is shared and noisy);
    ``detail`` is the median run's, and lists every run's value."""
    if len(runs) == 1:
        return runs[0]
    out = []
    for same in zip(*runs, strict=True):
        ordered = sorted(same, key=lambda r: r.value)
        mid = ordered[(len(ordered) - 1) // 2]  # the lower median: an actual run
        values = ", ".join(f"{r.value:.2f}" for r in same)
        ok = mid.ok if mid.ok is None else bool(mid.ok)
        out.append(dataclasses.replace(mid, ok=ok, detail=f"{mid.detail}; runs: {values}"))
    return out


def _measure(args: argparse.Namespace) -> tuple[list[Row], float]:
    try:
        importlib.import_module("bench.serving_vllm")  # S2's rows, when present
    except ModuleNotFoundError as exc:
        if exc.name != "bench.serving_vllm":
            raise
    counts = [1, 4, 16] if args.quick else [1, 8, 64, 256]
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        setup = build_setup(
            Path(tmp),
            quick=args.quick,
            threads=args.threads,
            n_adapters=max(max(counts), 24),
            device=args.device,
            dtype=args.dtype,
        )
        steps = [
            ("a" in args.only or "d" in args.only, lambda: bench_throughput(setup)),
            ("b" in args.only, lambda: bench_distinct_adapters(setup)),
            ("c" in args.only, lambda: bench_cold_ttft(setup)),
            ("e" in args.only, lambda: bench_scaling(setup, counts)),
        ]
        runs: list[list[Row]] = []
        for _ in range(args.runs):
            runs.append([row for wanted, step in steps if wanted for row in step()])
        rows += median_rows(runs)
        for hook in EXTRA_ROWS if "v" in args.only else ():
            rows += hook(setup)
    return rows, round(time.perf_counter() - started, 1)


if __name__ == "__main__":
    sys.exit(main())
