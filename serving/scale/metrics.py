"""Per-replica adapter figures on the ingress's ``/metrics``, beside the summed engine metrics.

The summed ones (``loradock_adapter_loads``...) come from ``RemoteEngine.stats()`` through the
usual collector; these carry a ``replica`` label, so a scrape shows where adapters are loaded:
a replica that reloads adapters often is one that multiplexed routing does not keep warm.
"""

from __future__ import annotations

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
    """Adapter lookups that found the adapter in no slot (read from CPU memory or disk)."""
    return stats.get("adapter_cpu_hits", 0.0) + stats.get("adapter_disk_loads", 0.0)


class ReplicaCollector:
    """Registered on the ingress's metrics registry; reads ``RemoteEngine.replicas``."""

    def __init__(self, engine: Any):
        self.engine = engine

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
        for replica, report in sorted(self.engine.replicas.items()):
            stats = report["stats"]
            for key, (name, doc, labels) in _PER_REPLICA.items():
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
