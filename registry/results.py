"""What the ``Registry`` facade hands back: typed, frozen results (``api.py`` re-exports them).

Kept apart from the facade so that callers that only type-annotate (serving, evals) and the
facade's own logic do not grow into one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loradock.registry.artifact import AdapterArtifact
from loradock.registry.card import AdapterCard
from loradock.registry.records import AdapterRecord


@dataclass(frozen=True)
class PublishedAdapter:
    """What a publish (or card update) produced: the new revision and what it holds."""

    repo_id: str
    sha: str
    card: AdapterCard
    artifact: AdapterArtifact | None
    aliases: tuple[str, ...] = ()
    kind: str = "adapter"

    @property
    def name(self) -> str:
        """``org/name@sha``: a name that always resolves to exactly this revision."""
        return f"{self.repo_id}@{self.sha}"


@dataclass(frozen=True)
class ResolvedAdapter:
    """A revision of an adapter, on local disk and verified."""

    repo_id: str
    sha: str
    path: Path
    card: AdapterCard | None
    artifact: AdapterArtifact

    @property
    def name(self) -> str:
        return f"{self.repo_id}@{self.sha}"


@dataclass(frozen=True)
class ResolvedModel:
    """A base (or merged) model on local disk: from the store, or a folder the user named."""

    repo_id: str | None
    sha: str | None
    path: Path
    card: AdapterCard | None


@dataclass(frozen=True)
class AdapterDetails:
    """One indexed revision with its repo's aliases and every indexed revision (newest first):
    what ``loradock registry show`` prints."""

    record: AdapterRecord
    aliases: dict[str, str]
    revisions: list[AdapterRecord]


__all__ = ["AdapterDetails", "PublishedAdapter", "ResolvedAdapter", "ResolvedModel"]
