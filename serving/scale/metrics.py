"""Per-replica adapter figures on the ingress's ``/metrics``, beside the summed engine metrics.

The summed ones (``loradock_adapter_loads``...) come from ``RemoteEngine.stats()`` through the
usual collector (a replaced replica's counts stay in the sums, so they never go down); these
carry a ``replica`` label, so a scrape shows where adapters are loaded: a replica that reloads
adapters often is one that multiplexed routing does not keep warm. Only live replicas are
shown: Ray names each replica's actor ``SERVE_REPLICA::<app>#<deployment>#<id>``, and a dead
one's name is gone from Ray's named actors, so its series disappear with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# engine stats key -> (metric name, help, extra labels)
_PER_REPLICA = {
    "adapter_disk_loads": ("loradock_replica_adapter_loads", "Adapters read from disk", {}),
    "adapter_slot_hits": (
        "loradock_replica_adapter_cache_hits",
        "Adapter lookups served from a tier",
        {"tier": "slot"},
    ),
    "adapter_cpu_hits": (
        "loradock_replica_adapter_cache_hits",
        "Adapter lookups served from a tier",
        {"tier": "cpu"},
    ),
}


def cache_misses(stats: dict[str, float]) -> float:
    """Adapter lookups that found the adapter in no slot (read from CPU memory or disk; vLLM's
    engine has no CPU tier of its own, so only reads from disk)."""
    return stats.get("adapter_cpu_hits", 0.0) + stats.get("adapter_disk_loads", 0.0)


def live_replica_ids() -> set[str]:
    """The ids of the Serve replicas alive now (one call to Ray's control store)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return {
        entry["name"].rpartition("#")[2]
        for entry in names
        if entry["name"].startswith("SERVE_REPLICA::")
    }


class ReplicaCollector:
    """Registered on the ingress's metrics registry; reads ``RemoteEngine.replicas``."""

    def __init__(self, engine: Any, live: Callable[[], set[str]] = live_replica_ids):
        self.engine = engine
        self.live = live

    def collect(self):
        families: dict[str, CounterMetricFamily] = {}
        misses = CounterMetricFamily(
            "loradock_replica_adapter_cache_misses",
            "Adapter lookups not served from a slot",
            labels=["replica"],
        )
        loaded = GaugeMetricFamily(
            "loradock_replica_adapters_loaded", "Adapters a replica holds", labels=["replica"]
        )
        alive = self.live()
        for replica, report in sorted(self.engine.replicas.items()):
            if replica not in alive:
                continue
            stats = report["stats"]
            for key, (name, doc, labels) in _PER_REPLICA.items():
                if key not in stats:  # vLLM holds adapters in one tier: no CPU-tier hits
                    continue
                family = families.get(name)
                if family is None:
                    family = CounterMetricFamily(name, doc, labels=["replica", *labels])
                    families[name] = family
                family.add_metric([replica, *labels.values()], float(stats.get(key, 0.0)))
            misses.add_metric([replica], cache_misses(stats))
            loaded.add_metric([replica], float(len(report["loaded"])))
        yield from families.values()
        yield misses
        yield loaded
