"""Config fields that are also command-line options, shared by every part's typed config.

``option()`` makes a dataclass field whose flags and help text sit in its metadata, next to
its type and default; ``loradock/cli/_options.py`` builds the typer option from them, so
nothing about an option is written twice. It lives here, below the parts, because training
(``MergeConfig``) and serving (``ServerConfig``) both declare options and must not import
each other.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, NamedTuple

CLI = "loradock.cli"  # the field metadata key ``option()`` writes


class CliOption(NamedTuple):
    help: str
    flags: tuple[str, ...]  # empty: ``--field-name``; ``--a/--b`` for an on/off pair
    envvar: str | None


def option(default: Any, help: str, *flags: str, envvar: str | None = None, **kw: Any) -> Any:
    """A field that is also a command-line option, with its flags and help text."""
    return field(default=default, metadata={CLI: CliOption(help, flags, envvar)}, **kw)
