"""How the server's configuration parts declare their fields and report problems.

``option()`` (from ``loradock.options``, which every part may import) makes a dataclass
field that is also a ``loradock serve`` option: its flags and help text sit in the field's
metadata, next to its type and default, and the CLI builds the option from them. Parts
check their values with plain functions over a mapping, so ``ServerConfig.from_options``
can collect the problems of every part before any part is built.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from loradock.errors import ConfigError
from loradock.options import CLI, option

# Re-exported: the server config parts import every field helper from here.
__all__ = ["CLI", "int_problems", "option", "refuse"]


def refuse(problems: list[str]) -> None:
    """One ``ConfigError`` listing every problem, if there is any."""
    if problems:
        raise ConfigError("Invalid server options", problems)


def int_problems(
    values: Mapping[str, Any], lows: Mapping[str, int], *, optional: Collection[str] = ()
) -> list[str]:
    """``name=value must be an integer >= low`` for each value that is not (``None`` is
    accepted for the ``optional`` names)."""
    problems = []
    for name, low in lows.items():
        value = values[name]
        if value is None and name in optional:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"{name}={value!r} must be an integer >= {low}")
    return problems
