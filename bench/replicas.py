"""Replicas on Ray Serve: ``python -m bench.replicas``.

The tiny model with ``--adapters`` adapters in a temporary registry, served by ``loradock``'s
Ray Serve application (``serving/scale/``) on a local cluster, three ways over the same
workload (rounds of concurrent greedy completions, every adapter in each round, in a seeded
order):

- 2 replicas, multiplexed: each adapter's ``org/name@sha`` routes it to a replica holding it;
- 2 replicas, unpinned: the same replicas, no model id: Ray's default routing (the least
  loaded of two replicas drawn at random), what a plain load balancer does;
- 1 replica, multiplexed: the same machine's cores given to one engine.

Per row: the adapter slot hit rate over the measured rounds (a lookup finding its adapter in
a slot, against one attaching it), adapter reads from disk, and completion tokens per second.
Goal (issue 20): multiplexed hit rate >= 0.9, with the unpinned rate beside it.

    python -m bench.replicas                      # 8 adapters, 4 slots a replica, 6 rounds
    python -m bench.replicas --rounds 3 --json --out /tmp/replicas.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GOAL_HIT_RATE = 0.9
BASE_ID = "tiny/base"
PROMPT = "Convert the date 3 March 2024 to ISO format:"
RESULTS = Path(__file__).parent / "results" / "replicas.json"


@dataclass
class Row:
    label: str
    replicas: int
    multiplexed: bool
    hit_rate: float
    disk_loads: int
    tokens_per_s: float


def publish(root: Path, n: int) -> Any:
    """A registry under ``root`` with the tiny base and ``n`` adapters made for it."""
    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card, build_base_card
    from loradock.settings import Settings
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    settings = Settings(
        home=root, hub_dir=root / "hub", index_path=root / "index.sqlite",
        cache_dir=root / "snapshots",
    )  # fmt: skip
    registry = Registry.open(settings)
    base = make_tiny_base(root / "base")
    registry.publish_base(base, BASE_ID, card=build_base_card())
    for i in range(n):
        adapter = make_tiny_adapter(base, root / f"adapter-{i}", seed=i + 1)
        card = build_adapter_card(base_model=BASE_ID, task="dates")
        registry.publish(adapter, f"bench/adapter-{i:02d}", card=card)
    return registry


def _metric(text: str, name: str, label: str = "") -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and label in line and not line.startswith("#")
    )


def counters(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=60).text
    return {
        "slot_hits": _metric(text, "loradock_adapter_cache_hits_total", 'tier="slot"'),
        "attaches": _metric(text, "loradock_adapter_attaches_total"),
        "disk_loads": _metric(text, "loradock_adapter_loads_total"),
    }


async def workload(url: str, models: list[str], rounds: int, max_tokens: int) -> int:
    """``rounds`` rounds of one concurrent request per adapter; the completion tokens."""
    from openai import AsyncOpenAI

    order = random.Random(0)
    tokens = 0
    options = {"api_key": "none", "max_retries": 0, "timeout": 600}
    async with AsyncOpenAI(base_url=f"{url}/v1", **options) as client:
        for _ in range(rounds):
            batch = order.sample(models, len(models))
            answers = await asyncio.gather(
                *(
                    client.completions.create(
                        model=m, prompt=PROMPT, max_tokens=max_tokens, temperature=0
                    )
                    for m in batch
                )
            )
            tokens += sum(a.usage.completion_tokens for a in answers)
    return tokens


def measure(args, registry, port: int, replicas: int, multiplexed: bool) -> Row:
    from ray import serve

    from loradock.serving.config import ServerConfig
    from loradock.serving.scale.app import APP_NAME, build_application

    config = ServerConfig.from_options(
        base=BASE_ID, replicas=replicas, max_loaded=args.slots, max_cpu_adapters=args.slots,
        dtype="float32", torch_threads=1, engine="peft",
    )  # fmt: skip
    app = build_application(config, settings=registry.settings, multiplexed=multiplexed)
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    models = [f"bench/adapter-{i:02d}" for i in range(args.adapters)]
    asyncio.run(workload(url, models, 1, args.max_tokens))  # warm-up: placement learnt
    before = counters(url)
    started = time.perf_counter()
    tokens = asyncio.run(workload(url, models, args.rounds, args.max_tokens))
    elapsed = time.perf_counter() - started
    after = counters(url)
    serve.delete(APP_NAME)
    hits = after["slot_hits"] - before["slot_hits"]
    lookups = hits + after["attaches"] - before["attaches"]
    label = f"{replicas} replica{'s' if replicas > 1 else ''}, "
    return Row(
        label=label + ("multiplexed" if multiplexed else "unpinned (Ray's default routing)"),
        replicas=replicas,
        multiplexed=multiplexed,
        hit_rate=hits / lookups if lookups else 0.0,
        disk_loads=int(after["disk_loads"] - before["disk_loads"]),
        tokens_per_s=tokens / elapsed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4, help="adapter slots a replica")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray cluster has")
    parser.add_argument("--json", action="store_true", help="write the rows as JSON")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    with socket.socket() as sock:  # a free port for Ray Serve's HTTP proxy
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"LORADOCK_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        registry = publish(Path(tmp), args.adapters)
        ray.init(num_cpus=args.cpus, include_dashboard=False, runtime_env={"env_vars": env})
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            rows = [
                measure(args, registry, port, 2, True),
                measure(args, registry, port, 2, False),
                measure(args, registry, port, 1, True),
            ]
        finally:
            serve.shutdown()
            ray.shutdown()
    report(rows, args)
    return 0 if rows[0].hit_rate >= GOAL_HIT_RATE else 1


def report(rows: list[Row], args) -> None:
    print(
        f"\n{args.adapters} adapters, {args.slots} slots a replica, {args.rounds} rounds, "
        f"{args.max_tokens} tokens each (goal: multiplexed hit rate >= {GOAL_HIT_RATE})\n"
    )
    print("| routing | slot hit rate | disk loads | tokens/s |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.label} | {row.hit_rate:.2f} | {row.disk_loads} | {row.tokens_per_s:.1f} |")
    if args.json:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
