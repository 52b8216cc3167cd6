"""Serving figures as ratios, measured side by side in one run: ``python -m bench.serving``.

One process builds a model of the chosen shape (``bench/model_shapes.py``: SmolLM2-135M's by
default, a 1B-class Llama, or the toy of the smoke tests), publishes LoRA adapters for it into
a temporary LocalHub, then runs the PEFT server (uvicorn on 127.0.0.1, driven by the real
``openai`` client from separate client processes, as real clients are) against baselines on
the same prompts (goals: ``GOALS`` in ``serving_setup.py``):

(l) the limit: the model's linear layers alone at batch 32 (``serving_limit.py``), the PEFT
    engine's decode step against it, and where that step's time goes (``serving_profile.py``)
(a) HTTP throughput, 32 concurrent clients over 8 adapters / offline batched generation of the
    merged model; beside it PEFT's ``adapter_names`` batch and the engine alone (tokens/s rows)
(b) 16 distinct adapters in one batch / one adapter
(c) time to first token, an adapter not yet loaded / a loaded one, under the same load
(d) the batching server / a server handling one request at a time
(e) throughput and peak RSS as distinct adapters grow (1, 8, 64, 256), slots fixed at 8
(s) half of each batch constrained by a JSON schema / none (``serving_structured.py``)
(p) every row of the batch asking for logprobs (top 5) / none (``serving_structured.py``)

    python -m bench.serving                    # full run: table + bench/results/serving.{json,png}
    python -m bench.serving --shape llama-1b   # the 1B-class shape: serving-llama-1b.json
    python -m bench.serving --quick --json     # smoke-test sizes (the toy model)
    python -m bench.serving --runs 3           # each figure the median of 3 runs (noisy machine)
    python -m bench.serving --device cuda      # every row on the GPU: serving-cuda.json

``--device``/``--dtype`` place every model of every row (servers, in-process engines, the
offline baselines) on one device in one dtype (by default what ``loradock serve`` picks there),
so the ratios compare like with like; another shape, device or ``--quick`` writes its own files
(``serving_report.results_suffix``), so no run overwrites another kind's results.

Other engines add rows through ``EXTRA_ROWS``: each hook gets the ``BenchSetup`` and returns
``Row``s; ``bench.serving_vllm`` is imported if it exists and appends its hook (it runs when
``--only`` holds ``v``, as by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from pathlib import Path

from bench.model_shapes import SHAPES, default_shape
from bench.serving_baselines import adapter_names_tps, engine_tps, offline_merged_tps
from bench.serving_clients import drive, drive_apart
from bench.serving_limit import bench_limit, of_limit
from bench.serving_report import median_rows, write_results
from bench.serving_setup import (  # noqa: F401  (re-exported: bench.serving_vllm uses them)
    DEVICES,
    DTYPES,
    GOALS,
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
    resolve_device,
)
from bench.serving_structured import bench_logprobs, bench_structured
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
    names_tps = adapter_names_tps(setup, jobs[:n], t)  # the same rows' adapters, one batch
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
            a, goal=f">= {GOALS['a']}", ok=a >= GOALS["a"],
            detail=f"{batched['tps']:.0f} vs {offline:.0f} tok/s"),
        Row("a_adapter_names_vs_offline_merged", f"PEFT adapter_names, 8 adapters in a batch of {n} "
            "/ offline merged", names_tps / offline,
            detail=f"{names_tps:.0f} vs {offline:.0f} tok/s"),
        Row("d_batched_vs_one_at_a_time", "(d) batching server / one request at a time",
            d, goal=f">= {GOALS['d']:g}", ok=d >= GOALS["d"],
            detail=f"{batched['tps']:.0f} vs {serial['tps']:.0f} tok/s"),
        Row("d_engine_only", "(d, engine alone) batching / one at a time, no HTTP", d_engine,
            detail=f"{engine_batched:.0f} vs {engine_serial:.0f} tok/s"
                   + (f", peak GPU memory {gpu.mib:.0f} MiB" if gpu.mib is not None else ""),
            gpu_mib=gpu.mib),
        Row("tps_endpoint", f"endpoint (PEFT engine over HTTP), {n} clients over 8 adapters",
            batched["tps"], unit="tok/s"),
        Row("tps_offline_merged", f"offline transformers generate, merged model, batch {n}",
            offline, unit="tok/s"),
        Row("tps_adapter_names", f"PEFT adapter_names, 8 adapters in a batch of {n}", names_tps,
            unit="tok/s"),
        Row("tps_engine_alone", f"PEFT engine alone (no HTTP), {n} requests over 8 adapters",
            engine_batched, unit="tok/s"),
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
            goal=f">= {GOALS['b']}", ok=b >= GOALS["b"], detail=f"{mixed['tps']:.0f} vs {one['tps']:.0f} tok/s"),
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
            goal=f"<= {GOALS['c']}", ok=c <= GOALS["c"],
            detail=f"median {statistics.median(cold_t) * 1000:.0f} vs "
                   f"{statistics.median(warm_t) * 1000:.0f} ms ({samples} each)"),
    ]  # fmt: skip


def bench_scaling(setup: BenchSetup, counts: list[int], *, slots: int = 8) -> list[Row]:
    """(e) throughput and peak RSS as the workload's distinct adapters grow, ``slots`` slots.

    With fewer slots than clients, a batch holds at most ``slots`` distinct adapters: 32
    clients over 256 adapters then run ~``slots`` rows a step. The 32-slot pass shows what
    ``--max-loaded`` at the batch size buys."""
    rows = []
    n_req = max(counts) if not setup.quick else max(32, max(counts))
    tag = "" if slots == 8 else f"_slots{slots}"
    for count in counts:
        names = setup.adapters[:count]
        jobs = [(names[i % count], PROMPTS[i % 8]) for i in range(n_req)]
        with Server(setup, max_loaded=slots, max_batch_size=32) as srv, PeakRss() as rss:
            # Each count gets a fresh engine process: without a warm-up, its first steps (on a
            # GPU: CUDA context, cuBLAS handles, ~1 s) would count against the first row only.
            drive_apart(srv.url, jobs[:8], concurrency=8, max_tokens=2)
            r = drive_apart(srv.url, jobs, concurrency=32, max_tokens=16)
            stats = srv.engine.stats()
        rows.append(
            Row(
                f"e_adapters_{count}{tag}",
                f"(e) {count} distinct adapters, {slots} slots",
                r["tps"],
                unit="tok/s",
                detail=f"peak RSS {rss.peak / 2**20:.0f} MiB, evictions "
                f"{stats.get('adapter_evictions', 0):.0f}, in CPU "
                f"{stats.get('adapters_in_cpu', 0):.0f}",
            )  # fmt: skip
        )
        rows[-1].rss_mib = round(rss.peak / 2**20, 1)
    by_count = dict(zip(counts, rows, strict=True))
    if 256 in by_count and 8 in by_count:
        e = by_count[256].value / by_count[8].value
        rows.append(
            Row(f"e_256_vs_8{tag}", f"(e) 256 distinct adapters / 8, {slots} slots", e,
                goal=f">= {GOALS['e']}", ok=e >= GOALS["e"],
                detail=f"{by_count[256].value:.0f} vs {by_count[8].value:.0f} tok/s")
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (tiny model)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (all runs)")
    parser.add_argument(
        "--device", default="cpu", choices=DEVICES, help="where every model runs (cpu)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, help="default: what `loradock serve --dtype auto` picks"
    )
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        help="model shape (bench/model_shapes.py): smollm2 (default), llama-1b; toy with --quick",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat the figures; the table shows medians"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--only",
        default="labcdespv",
        help="which figures, e.g. 'ae' ('l': the limit and profile, 'v': other engines' rows)",
    )
    args = parser.parse_args(argv)
    args.shape = args.shape or default_shape(args.quick)
    try:
        args.device, args.dtype = resolve_device(args.device, args.dtype)
    except ConfigError as exc:
        parser.error(str(exc))  # exit status 2, before any work: nothing half done
    # Stdout carries only the table or the JSON: anything printed while measuring goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        rows, seconds, about = _measure(args)
    result = write_results(args, rows, seconds, about)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from loradock.cli._common import print_table

        print_table(
            f"serving ({'quick' if args.quick else 'full'}, {about['model']}, {args.device} "
            f"{args.dtype}, {seconds} s)",
            ["figure", "value", "goal", "ok", "detail"],
            [(r.label, f"{r.value:.2f} {r.unit}", r.goal, r.ok, r.detail) for r in rows],
        )
    return 0


def _measure(args: argparse.Namespace) -> tuple[list[Row], float, dict]:
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
            # (c) reads adapters 16 on as never loaded; (e) needs its largest count.
            n_adapters=max(max(counts) if "e" in args.only else 0, 24 if args.quick else 32),
            device=args.device,
            dtype=args.dtype,
            shape=args.shape,
        )
        steps = [
            ("l" in args.only, lambda: bench_limit(setup)),
            ("a" in args.only or "d" in args.only, lambda: bench_throughput(setup)),
            ("b" in args.only, lambda: bench_distinct_adapters(setup)),
            ("c" in args.only, lambda: bench_cold_ttft(setup)),
            ("e" in args.only, lambda: bench_scaling(setup, counts)),
            ("e" in args.only, lambda: bench_scaling(setup, [counts[1], counts[-1]], slots=32)),
            ("s" in args.only, lambda: bench_structured(setup)),
            ("p" in args.only, lambda: bench_logprobs(setup)),
        ]
        runs: list[list[Row]] = []
        for _ in range(args.runs):
            runs.append([row for wanted, step in steps if wanted for row in step()])
        rows += median_rows(runs)
        for hook in EXTRA_ROWS if "v" in args.only else ():
            rows += hook(setup)
        of_limit(rows)
    about = {"model": setup.model, "profile": setup.extra.get("profile")}
    return rows, round(time.perf_counter() - started, 1), about


if __name__ == "__main__":
    sys.exit(main())
