"""PEFT's module-name patterns, matched with PEFT's semantics but within a time budget.

An adapter's ``adapter_config.json`` carries regular expressions (a string ``target_modules``
or ``exclude_modules``, the keys of ``alpha_pattern``). Python's ``re`` can backtrack
catastrophically on a hostile one (``(.|.)*\\d\\d`` against a 31-character module name runs
for minutes) and holds the GIL meanwhile, freezing the model thread too. The ``regex``
package matches the same syntax, releases the GIL while it matches and takes a timeout, so
one adapter's patterns get ``MATCH_BUDGET_S`` in all; a pattern that runs past it, is longer
than ``MAX_PATTERN_CHARS`` or is not a valid Python regular expression refuses the adapter
(422). Compiling has no timeout, and ``regex`` expands counted repetitions when it compiles
(``(?:a{1000}){1000}`` takes over a second, ``(?:a{100000}){100000}`` never ends): a pattern
whose counts multiply past ``MAX_REPEAT_PRODUCT`` is refused before it is compiled, and so is
any other brace (``regex``'s fuzzy matching, a literal ``{``: no module name has one).

Semantics (``peft.tuners.tuners_utils.check_target_module_exists``, ``get_pattern_key``):
a string ``target_modules``/``exclude_modules`` must match the whole module name; a list
matches a name or a name's dotted suffix; ``"all-linear"`` targets every linear layer; a
pattern map's key matches the end of a name (``(.*\\.)?(key)$``), the first key that matches
wins.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import regex

from loradock.errors import IncompatibleAdapterError

MATCH_BUDGET_S = 0.5  # every pattern match of one adapter together (normal ones take us)
MAX_PATTERN_CHARS = 512  # PEFT's own patterns are a few dozen characters
MAX_REPEAT_PRODUCT = 1000  # all counted repetitions' bounds multiplied (layers\.\d{1,2}: 2)
_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


class ModulePatterns:
    """One adapter's ``target_modules``, ``exclude_modules`` and pattern maps, checked once
    and matched against module names within one shared time budget."""

    def __init__(self, adapter: str, config: Any, *, budget_s: float = MATCH_BUDGET_S):
        self.adapter = adapter
        self.targets = getattr(config, "target_modules", None)
        self.excludes = getattr(config, "exclude_modules", None)
        self._deadline = time.monotonic() + budget_s
        self._budget_s = budget_s
        maps = [getattr(config, f, None) or {} for f in ("alpha_pattern", "rank_pattern")]
        strings = [p for p in (self.targets, self.excludes) if isinstance(p, str)]
        problems = [_pattern_problem(p, p) for p in strings]
        problems += [_pattern_problem(k, _ending(k)) for m in maps for k in m]
        if any(problems):
            raise IncompatibleAdapterError(
                f"Adapter {adapter!r} cannot be served", [p for p in problems if p]
            )

    def targeted(self, module: str) -> bool:
        """Whether PEFT would put this adapter's LoRA on ``module`` (so load its weights)."""
        if self._listed(self.excludes, module):
            return False
        if self.targets is None or self.targets == "all-linear":
            return True  # no targets named (PEFT saves them): the weights say which
        return self._listed(self.targets, module)

    def value(self, pattern_map: Mapping[str, Any] | None, module: str, default: Any) -> Any:
        """The value of the first key of ``pattern_map`` matching ``module``, else default."""
        for key, value in (pattern_map or {}).items():
            if self._match(_ending(key), module, whole=False):
                return value
        return default

    def _listed(self, names: str | Iterable[str] | None, module: str) -> bool:
        if not names:
            return False
        if isinstance(names, str):
            return self._match(names, module, whole=True)
        return any(module == n or module.endswith(f".{n}") for n in names)

    def _match(self, pattern: str, module: str, *, whole: bool) -> bool:
        """``fullmatch`` (``whole``) or ``match`` of ``module``, within what is left of the
        budget."""
        left = self._deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            found = (regex.fullmatch if whole else regex.match)(pattern, module, timeout=left)
        except TimeoutError:
            raise IncompatibleAdapterError(
                f"Adapter {self.adapter!r} cannot be served",
                [
                    f"its module-name pattern {_shown(pattern)} took over {self._budget_s} s to "
                    "match the model's module names (catastrophic backtracking): name the "
                    "modules plainly, e.g. target_modules: [q_proj, v_proj]"
                ],
            ) from None
        return found is not None


def _ending(key: str) -> str:
    """A pattern map's key as PEFT matches it: at the end of a name, after a dot or whole."""
    return rf"(.*\.)?({key})$"


def _pattern_problem(pattern: Any, compiled: str) -> str | None:
    """What is wrong with ``pattern`` (as written; ``compiled``: as it is matched), if any."""
    if not isinstance(pattern, str):
        return f"module-name pattern {pattern!r} is not a string"
    if len(pattern) > MAX_PATTERN_CHARS:
        return (
            f"module-name pattern {_shown(pattern)} is {len(pattern)} characters long, over "
            f"the limit of {MAX_PATTERN_CHARS}"
        )
    try:
        re.compile(compiled)  # PEFT's syntax; quick: ``re`` never expands repetitions
        problem = _repeat_problem(pattern)
        if problem is None:
            regex.compile(compiled)
    except (re.error, regex.error) as exc:
        return f"module-name pattern {_shown(pattern)} is not a valid regular expression: {exc}"
    return problem


def _repeat_problem(pattern: str) -> str | None:
    """Braces other than counts, or counts whose product would take ``regex`` long to
    compile."""
    product = 1
    for brace in (i for i, c in enumerate(pattern) if c == "{"):
        counted = _REPEAT.match(pattern, brace)
        if counted is None:
            return f"module-name pattern {_shown(pattern)} has a '{{' that is not a count"
        product *= max(1, *(int(n) for n in counted.groups() if n))
    if product > MAX_REPEAT_PRODUCT:
        return (
            f"module-name pattern {_shown(pattern)}: its counted repetitions multiply to "
            f"{product}, over the limit of {MAX_REPEAT_PRODUCT}"
        )
    return None


def _shown(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")
