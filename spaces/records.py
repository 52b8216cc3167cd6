"""What a loradock endpoint answers, as plain records: served models, registry index
rows, cards with their lineage, and the cost of one generation.

Parsed leniently (the Space may face an older or newer server): unknown row fields are
kept in ``extra``, a card whose YAML does not parse keeps its text whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``/v1/models``: a base model (``parent`` None) or an adapter on it."""

    id: str
    parent: str | None = None


@dataclass(frozen=True)
class AdapterRow:
    """One registry index row (the registry's ``AdapterRecord``) from ``/v1/registry/adapters``."""

    repo_id: str
    kind: str = "adapter"  # "adapter", "base" or "merge"
    base_model: str | None = None
    base_revision: str | None = None
    tasks: tuple[str, ...] = ()
    sha: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # "task/metric" -> value
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> sha ("" when unknown)
    revisions: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # rank, peft_type, license, ...

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> AdapterRow:
        tasks = row.get("tasks")
        if tasks is None:
            tasks = [row["task"]] if row.get("task") else []
        known = {"repo_id", "id", "kind", "base_model", "base_revision", "task", "tasks", "sha"}
        known |= {"metrics", "aliases", "revisions", "datasets", "tags"}
        return cls(
            repo_id=str(row.get("repo_id") or row.get("id") or ""),
            kind=str(row.get("kind") or "adapter"),
            base_model=row.get("base_model"),
            base_revision=row.get("base_revision"),
            tasks=tuple(str(t) for t in tasks),
            sha=row.get("sha"),
            metrics={str(k): float(v) for k, v in _metrics_of(row.get("metrics")).items()},
            aliases=_aliases_of(row.get("aliases"), row.get("sha")),
            revisions=tuple(_revision_sha(r) for r in row.get("revisions") or ()),
            datasets=tuple(str(d) for d in row.get("datasets") or ()),
            tags=tuple(str(t) for t in row.get("tags") or ()),
            extra={k: v for k, v in row.items() if k not in known},
        )


@dataclass(frozen=True)
class AdapterCardView:
    """An adapter's card as the server renders it: markdown plus lineage facts."""

    repo_id: str
    markdown: str
    lineage: dict[str, Any] = field(default_factory=dict)
    sha: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the card's YAML front matter


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(YAML front matter, markdown body) of a Hub README; bad YAML keeps the text whole."""
    if not text.startswith("---"):
        return {}, text
    head, sep, body = text[3:].partition("\n---")
    if not sep:
        return {}, text
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    return meta, body.partition("\n")[2].lstrip("\n")


def lineage_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The lineage facts a loradock card carries in its YAML (see registry/card.py)."""
    lineage: dict[str, Any] = {}
    for key, name in (
        ("base_model", "base_model"),
        ("base_model_revision", "base_revision"),
        ("base_model_relation", "relation"),
        ("datasets", "datasets"),
        ("license", "license"),
    ):
        if meta.get(key):
            lineage[name] = meta[key]
    training = meta.get("loradock")
    if isinstance(training, dict) and training:
        lineage["training"] = training
    return lineage


@dataclass
class GenerationStats:
    """What one streamed generation cost, shown under its output."""

    model: str
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str | None = None

    def summary(self) -> str:
        ttft = "n/a" if self.first_token_s is None else f"{self.first_token_s:.2f}s"
        rate = self.completion_tokens / self.total_s if self.total_s > 0 else 0.0
        prompt = "?" if self.prompt_tokens is None else str(self.prompt_tokens)
        return (
            f"{self.completion_tokens} tokens · prompt {prompt} · first token {ttft} · "
            f"total {self.total_s:.2f}s · {rate:.1f} tok/s"
        )


def _metrics_of(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if isinstance(v, (int, float))}
    if isinstance(value, list):  # [{"task":..., "metric":..., "value":...}]
        out = {}
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("value"), (int, float)):
                out[f"{item.get('task')}/{item.get('metric')}"] = item["value"]
        return out
    return {}


def _aliases_of(value: Any, sha: str | None) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a bare list of names points at the row's revision
        return {str(a): str(sha or "") for a in value}
    return {}


def _revision_sha(value: Any) -> str:
    return str(value.get("sha", "")) if isinstance(value, dict) else str(value)
