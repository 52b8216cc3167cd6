"""Adapter names: ``org/name``, ``org/name@<sha>``, ``org/name@<alias or branch>``.

Names arrive from users and from HTTP requests, so they are parsed strictly: a repo id is
exactly ``namespace/name`` with the Hub's characters, never a path. Nothing that parses
here can climb out of a folder (no ``..``, no leading ``/``, no backslash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loradock.errors import InvalidNameError

# The Hub's own rule for each half of a repo id (letters, digits, '-', '_', '.'), without
# leading/trailing separators and without '..' (huggingface_hub's validate_repo_id agrees).
# Every pattern here is used with ``fullmatch``: ``match`` with a trailing ``$`` lets a final
# newline through ("acme/x\n" would pass and then name another file or cache key).
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID_RE = re.compile(rf"{_PART}/{_PART}")
NAMESPACE_RE = re.compile(_PART)
SHA_RE = re.compile(r"[0-9a-f]{40}")
# Aliases and branch names: a conservative subset of git ref names.
REVISION_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")

DEFAULT_REVISION = "main"


def _checked(
    value: str, pattern: re.Pattern[str], message: str, *, refused: str | None = None
) -> str:
    """``value`` if it is a string matching ``pattern`` (never with ``..`` nor equal to
    ``refused``); else ``InvalidNameError(message)``."""
    if (
        not isinstance(value, str)
        or not pattern.fullmatch(value)
        or ".." in value
        or value == refused
    ):
        raise InvalidNameError(message)
    return value


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` unchanged if it is ``namespace/name``; else raise ``InvalidNameError``."""
    return _checked(
        repo_id,
        REPO_ID_RE,
        f"Invalid repo id {repo_id!r}: expected 'namespace/name' with letters, digits, "
        "'-', '_' or '.' (for example 'acme/smollm2-dates-lora').",
    )


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` (a user or org: the part of a repo id before '/') or raise."""
    return _checked(
        namespace,
        NAMESPACE_RE,
        f"Invalid namespace {namespace!r}: expected a user or organisation name such as "
        "'acme' (letters, digits, '-', '_' or '.'; no '/').",
    )


def validate_revision(revision: str) -> str:
    """Return ``revision`` if it is a commit sha, branch or alias name; else raise."""
    return _checked(
        revision,
        REVISION_RE,
        f"Invalid revision {revision!r}: expected a 40-character commit sha, a branch "
        "such as 'main', or an alias such as 'prod'.",
    )


def validate_alias(alias: str) -> str:
    """Aliases are short lower-case words (``prod``, ``staging``, ``canary-2``), never a sha
    and never ``main`` (the branch every name without a revision means)."""
    return _checked(
        alias,
        ALIAS_RE,
        f"Invalid alias {alias!r}: use a lower-case word of at most 32 characters "
        "(letters, digits, '-', '_'), not 'main'.",
        refused=DEFAULT_REVISION,
    )


def is_sha(revision: str | None) -> bool:
    return bool(revision) and bool(SHA_RE.fullmatch(revision or ""))


@dataclass(frozen=True)
class AdapterRef:
    """A parsed name: the repo and the revision asked for (``None`` means the default)."""

    repo_id: str
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        """True when the revision is an immutable commit sha."""
        return is_sha(self.revision)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def parse_name(name: str) -> AdapterRef:
    """Parse ``org/name[@rev]`` into an :class:`AdapterRef`, validating both halves. The name
    is taken as given: surrounding whitespace is refused, not stripped, so what was asked for
    is exactly what is served and cached."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"Invalid adapter name {name!r}: expected 'org/name[@revision]'.")
    if any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidNameError(
            f"Invalid adapter name {name!r}: it contains whitespace or control characters; "
            "expected 'org/name[@revision]' exactly."
        )
    repo_id, sep, revision = name.partition("@")
    validate_repo_id(repo_id)
    if sep:
        validate_revision(revision)
        return AdapterRef(repo_id, revision)
    return AdapterRef(repo_id, None)
