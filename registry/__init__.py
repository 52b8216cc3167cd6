"""loradock.registry: adapters and their cards, the Hub stores, the index, resolution.

The ground floor of loradock: it imports no other part. Most callers need only
:class:`Registry` (``Registry.open()``) and the card builders.
"""

from loradock.registry.api import PublishedAdapter, Registry, ResolvedAdapter, ResolvedModel
from loradock.registry.artifact import AdapterArtifact, read_adapter
from loradock.registry.card import AdapterCard, EvalMetric, build_adapter_card, build_base_card
from loradock.registry.compat import check_compatibility
from loradock.registry.local_hub import LocalHub
from loradock.registry.names import AdapterRef, parse_name
from loradock.registry.search_query import SearchQuery

__all__ = [
    "AdapterArtifact",
    "AdapterCard",
    "AdapterRef",
    "EvalMetric",
    "LocalHub",
    "PublishedAdapter",
    "Registry",
    "ResolvedAdapter",
    "ResolvedModel",
    "SearchQuery",
    "build_adapter_card",
    "build_base_card",
    "check_compatibility",
    "parse_name",
    "read_adapter",
]
