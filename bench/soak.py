"""Soak: the endpoint under steady load for a long time, with faults (not run in CI).

``python -m bench.soak`` serves the tiny random model and 20 adapters from the PEFT engine in
its own process (what ``loradock serve`` runs), sends 2 requests a second (a random adapter
or the base, streaming or not, 8 to 64 tokens), lets some clients leave mid-answer, and kills
the engine process (SIGKILL) every ``--kill-every`` seconds. Clients behave as a client of a
load-balanced service should: a 503 with ``Retry-After`` is retried after that wait.

Every minute it prints the requests by outcome and the RSS of the HTTP process and of the
engine process; at the end, the requests that failed other than in flight at a kill (the
goal: none) and whether RSS stayed flat after warm-up.

    python -m bench.soak                      # 30 minutes, a kill every 5 minutes
    python -m bench.soak --minutes 5 --kill-every 60 --out /tmp/soak.json

The figures also go to ``--out`` (``bench/results/soak.json``) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

PROMPTS = [
    "Convert the date 3 March 2024 to ISO format:",
    "The capital of France is",
    "List three colors:",
    "Write a haiku about the sea:",
]


@dataclass
class Soak:
    url: str
    engine: Any
    models: list[str]
    rng: random.Random
    disconnect: float
    retry_for: float  # seconds a client retries a 503 before it gives up
    kills: list[tuple[float, float]] = field(default_factory=list)  # (killed at, serving again)
    outcomes: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)

    async def request(self, client: httpx.AsyncClient, n: int) -> None:
        """One client request, retried on 503; its outcome counted."""
        body = {
            "model": self.rng.choice(self.models),
            "prompt": self.rng.choice(PROMPTS),
            "max_tokens": self.rng.randint(8, 64),
            "stream": self.rng.random() < 0.5,
        }
        leave_after = self.rng.uniform(0.01, 0.3) if self.rng.random() < self.disconnect else None
        started, deadline = time.monotonic(), time.monotonic() + self.retry_for
        while True:
            attempt = time.monotonic()
            try:
                status, error, wait = await asyncio.wait_for(self._once(client, body), leave_after)
            except TimeoutError:
                self.outcomes["client left"] += 1
                return
            except httpx.HTTPError as exc:
                status, error, wait = 0, repr(exc), 1.0
            if status == 503 and time.monotonic() < deadline:
                self.outcomes["503 retried"] += 1
                await asyncio.sleep(wait)
                continue
            if status == 200 and error is None:
                self.outcomes["ok"] += 1
            elif status == 503 and self.engine.health() is not None:
                self.outcomes["gave up retrying while the engine restarted"] += 1
            elif self._at_a_kill(attempt):
                self.outcomes["failed in flight at a kill"] += 1
            else:
                self.outcomes["FAILED"] += 1
                self.failures.append({"n": n, "t": round(started, 1), "status": status, **body})
                self.failures[-1]["error"] = error
            return

    async def _once(self, client: httpx.AsyncClient, body: dict) -> tuple[int, str | None, float]:
        """The status, the error text if any, and the seconds a 503 asks to wait."""
        async with client.stream("POST", f"{self.url}/v1/completions", json=body) as response:
            text = (await response.aread()).decode()
        if response.status_code != 200:
            wait = float(response.headers.get("retry-after") or 1)
            return response.status_code, text[:200], wait
        if body["stream"] and '"error"' in text:  # an error event: the stream broke
            code = 503 if "engine_unavailable" in text else 500
            return code, text[text.find('{"error"') :][:200], 1.0
        return 200, None, 0.0

    def _at_a_kill(self, attempt: float) -> bool:
        """The attempt was under way when the engine was killed (or it is dying right now)."""
        return any(attempt <= killed <= (back or time.monotonic()) for killed, back in self.kills)

    async def killer(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.kills.append((time.monotonic(), 0.0))
            os.kill(self.engine.pid, signal.SIGKILL)
            while self.engine.health() is None:  # until the death is noticed
                await asyncio.sleep(0.05)
            while self.engine.health() is not None:
                await asyncio.sleep(0.2)
            self.kills[-1] = (self.kills[-1][0], time.monotonic())


def rss_mib() -> tuple[float, float]:
    """RSS of this (HTTP) process and of its engine process, in MiB."""
    me = psutil.Process()
    children = sum(c.memory_info().rss for c in me.children(recursive=True))
    return me.memory_info().rss / 2**20, children / 2**20


def build(root: Path, n_adapters: int) -> tuple[Any, Any, list[str]]:
    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card, build_base_card
    from loradock.settings import Settings
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    base = make_tiny_base(root / "base", num_heads=2, num_kv_heads=1)
    settings = Settings(
        home=root, hub_dir=root / "hub", index_path=root / "index.sqlite", cache_dir=root / "snap"
    )
    registry = Registry.open(settings)
    registry.publish_base(base, "soak/base", card=build_base_card())
    names = []
    for i in range(n_adapters):
        folder = make_tiny_adapter(base, root / f"adapter-{i}", seed=i + 1)
        card = build_adapter_card(base_model="soak/base")
        names.append(registry.publish(folder, f"soak/lora-{i:02d}", card=card).repo_id)
    return registry, registry.resolve_base("soak/base"), names


async def drive(soak: Soak, args: argparse.Namespace) -> list[dict]:
    """Requests at ``args.rate`` a second for ``args.minutes``; one line of figures a minute."""
    samples: list[dict] = []
    killer = asyncio.ensure_future(soak.killer(args.kill_every))
    tasks: set[asyncio.Task] = set()
    start = time.monotonic()
    end, next_report, n = start + args.minutes * 60, start + 60, 0
    # A fresh connection per request: a pooled one the server closes after its keep-alive
    # timeout, just as a client reuses it, would fail a request for reasons of the client's.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        while time.monotonic() < end:
            n += 1
            task = asyncio.ensure_future(soak.request(client, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(soak.rng.expovariate(args.rate))
            if time.monotonic() >= next_report:
                next_report += 60
                http, engine = rss_mib()
                samples.append(
                    {"minute": round((time.monotonic() - start) / 60), "http_rss_mib": round(http),
                     "engine_rss_mib": round(engine), "kills": len(soak.kills), **soak.outcomes}
                )  # fmt: skip
                print(json.dumps(samples[-1]), flush=True)
        killer.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2.0, help="requests a second")
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--kill-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--disconnect", type=float, default=0.1, help="share of clients leaving")
    parser.add_argument("--retry-for", type=float, default=300.0, help="seconds a 503 is retried")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/soak.json"), help="where the figures go"
    )
    args = parser.parse_args(argv)

    from loradock.serving.config import ServerConfig
    from loradock.serving.http.app import create_app
    from loradock.serving.http.background import BackgroundServer
    from loradock.serving.server import build_engine

    with tempfile.TemporaryDirectory(prefix="loradock-soak-") as tmp:
        registry, base, names = build(Path(tmp), args.adapters)
        config = ServerConfig.from_options(
            base="soak/base", port=0, dtype="float32", torch_threads=1, max_loaded=8
        )
        engine = build_engine(config, base.path)
        app = create_app(engine, registry=registry, config=config, base=base)
        with BackgroundServer(app) as url:
            models, rng = ["soak/base", *names], random.Random(args.seed)
            soak = Soak(url, engine, models, rng, args.disconnect, args.retry_for)
            samples = asyncio.run(drive(soak, args))
            restarts = engine.supervisor.restarts
    report(soak, samples, restarts)
    write_results(args, soak, samples, restarts)


def write_results(args, soak: Soak, samples: list[dict], restarts: int) -> None:
    """The run's settings, per-minute samples and outcomes as JSON (``--out``)."""
    result = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "kills": len(soak.kills),
        "restarts": restarts,
        "seconds_to_serving_again": [round(b - k, 1) for k, b in soak.kills if b],
        "outcomes": dict(soak.outcomes),
        "failures": soak.failures[:50],
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"figures written to {args.out}")


def report(soak: Soak, samples: list[dict], restarts: int) -> None:
    print(f"\nkills: {len(soak.kills)}, restarts: {restarts}, outcomes: {dict(soak.outcomes)}")
    back = [round(b - k, 1) for k, b in soak.kills if b]
    print(f"kills at (monotonic s): {[round(k, 1) for k, _ in soak.kills]}")
    print(f"seconds from each kill to serving again: {back}")
    print(f"failed requests beyond those in flight at a kill: {soak.outcomes['FAILED']}")
    for failure in soak.failures[:10]:
        print("  ", json.dumps(failure))
    if len(samples) >= 3:
        warm = samples[1]["http_rss_mib"]
        print(f"HTTP process RSS after warm-up: {warm} MiB -> {samples[-1]['http_rss_mib']} MiB")


if __name__ == "__main__":
    main()
