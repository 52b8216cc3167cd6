"""The checks every training config section shares: one ``ConfigError`` per section."""

from __future__ import annotations

from typing import Any

from loradock.errors import ConfigError


def raise_problems(section: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"Invalid {section}", problems)


def check_positive(problems: list[str], name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        need = "a number >= 0" if allow_zero else "a number > 0"
        problems.append(f"{name}={value!r} must be {need}")
