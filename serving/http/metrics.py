"""Prometheus metrics of one server, in a registry of its own (several apps per process in tests).

Request-side figures (requests, tokens, latency, time to first token) are recorded by the HTTP
layer; engine-side figures (queue depth, adapter loads, evictions, cache hits) are read from
the engine's ``stats()`` at scrape time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from loradock.serving.engines.base import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# engine stats key -> (metric name, help, kind, labels)
_ENGINE_METRICS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "queue_depth": ("loradock_queue_depth", "Requests waiting to join the batch", "gauge", {}),
    "running": ("loradock_running_sequences", "Sequences in the running batch", "gauge", {}),
    "adapters_attached": ("loradock_adapters_attached", "Adapters in model slots", "gauge", {}),
    "adapters_in_cpu": ("loradock_adapters_in_cpu", "Adapters held in CPU memory", "gauge", {}),
    "adapter_disk_loads": ("loradock_adapter_loads", "Adapters read from disk", "counter", {}),
    "adapter_attaches": ("loradock_adapter_attaches", "Adapters attached to a slot", "counter", {}),
    "adapter_evictions": (
        "loradock_adapter_evictions",
        "Adapters evicted from slots",
        "counter",
        {},
    ),
    "adapter_cpu_evictions": (
        "loradock_adapter_cpu_evictions",
        "Adapters dropped from CPU memory",
        "counter",
        {},
    ),
    "adapter_slot_hits": (
        "loradock_adapter_cache_hits",
        "Adapter lookups served from a tier",
        "counter",
        {"tier": "slot"},
    ),
    "adapter_cpu_hits": (
        "loradock_adapter_cache_hits",
        "Adapter lookups served from a tier",
        "counter",
        {"tier": "cpu"},
    ),
    "engine_restarts": (
        "loradock_engine_restarts",
        "Engine process restarts after it died",
        "counter",
        {},
    ),
    "engine_up": (
        "loradock_engine_up",
        "1 while the engine serves, 0 while it is down",
        "gauge",
        {},
    ),
    "batch_steps": ("loradock_batch_steps", "Forward passes run", "counter", {}),
    "batch_batched_rows": ("loradock_batch_rows", "Sequence-steps run in batches", "counter", {}),
    "batch_prompt_tokens_computed": (
        "loradock_prefill_tokens",
        "Prompt tokens prefilled: computed, or reused from another prompt's (same beginning)",
        "counter",
        {"source": "computed"},
    ),
    "batch_prompt_tokens_reused": (
        "loradock_prefill_tokens",
        "Prompt tokens prefilled: computed, or reused from another prompt's (same beginning)",
        "counter",
        {"source": "reused"},
    ),
    "batch_prefill_seconds": (
        "loradock_engine_seconds",
        "Model-thread time by activity",
        "counter",
        {"activity": "prefill"},
    ),
    "batch_decode_seconds": (
        "loradock_engine_seconds",
        "Model-thread time by activity",
        "counter",
        {"activity": "decode"},
    ),
    "batch_idle_seconds": (
        "loradock_engine_seconds",
        "Model-thread time by activity",
        "counter",
        {"activity": "idle"},
    ),
}


class _EngineCollector:
    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        stats = self.engine.stats()
        families: dict[str, Any] = {}
        for key, (name, doc, kind, labels) in _ENGINE_METRICS.items():
            if key not in stats:
                continue
            family = families.get(name)
            if family is None:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = families[name] = cls(name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), float(stats[key]))
        yield from families.values()


class _ResolverCollector:
    """Names served from their last good resolve while the registry (the Hub) failed."""

    def __init__(self, resolver: Any):
        self.resolver = resolver

    def collect(self):
        family = CounterMetricFamily(
            "loradock_stale_if_error",
            "Adapter names answered from their last good resolve while the registry failed",
        )
        family.add_metric([], float(self.resolver.stats().get("stale_if_error", 0)))
        yield family


class ServerMetrics:
    def __init__(self, engine: Engine, resolver: Any = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loradock_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "loradock_prompt_tokens", "Prompt tokens processed", ["kind"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "loradock_completion_tokens", "Tokens generated", ["kind"], registry=self.registry
        )
        self.latency = Histogram(
            "loradock_request_latency_seconds",
            "Time from request to last token",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "loradock_time_to_first_token_seconds",
            "Time from request to first token",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))
        if resolver is not None:
            self.registry.register(_ResolverCollector(resolver))

    def render(self) -> bytes:
        return generate_latest(self.registry)
