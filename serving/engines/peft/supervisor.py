"""When the engine process dies: restart it after a backoff, or stop restarting after a crash loop.

``ProcessEngine`` reports each death (and each failed restart) to a ``Supervisor`` and waits
the delay it answers before starting a new engine process. The delay doubles with each death
counted in the window (``restart_backoff_s``, 2x, 4x, ... up to ``restart_backoff_max_s``), so
a single kill costs half a second and a process that keeps dying is not restarted in a tight
loop. ``crash_loop_deaths`` deaths within ``crash_loop_window_s`` seconds mean a restart will
not help (a base model that no longer loads, memory that is never enough): the supervisor
gives up, and ``/health`` says why until someone restarts the server.

A client refused meanwhile is told when to come back (``Retry-After``): the seconds until the
next start begins plus how long the last start took (the first start, then each restart,
adapters attached again included), rounded up, at least 1. After a crash loop nothing will
come back by waiting, and ``retry_after_s`` is None.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RestartPolicy:
    backoff_s: float
    backoff_max_s: float
    crash_loop_deaths: int
    crash_loop_window_s: float

    @classmethod
    def from_options(cls, options: Any) -> RestartPolicy:
        """From a ``PeftEngineConfig``."""
        return cls(
            backoff_s=options.restart_backoff_s,
            backoff_max_s=options.restart_backoff_max_s,
            crash_loop_deaths=options.crash_loop_deaths,
            crash_loop_window_s=options.crash_loop_window_s,
        )


class Supervisor:
    """Counts deaths and restarts; answers how long to wait before the next start."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.clock = clock
        self.restarts = 0
        self.last_reason: str | None = None  # why the engine process last died
        self.gave_up: str | None = None  # set once a crash loop stopped the restarts
        self.startup_s = 0.0  # how long the last start took, until it served again
        self._next_start: float | None = None  # when the pending restart begins (clock)
        self._deaths: deque[float] = deque()

    def died(self, reason: str) -> float | None:
        """Record a death; the seconds to wait before restarting, or None: stop restarting."""
        policy, now = self.policy, self.clock()
        self.last_reason = reason
        self._deaths.append(now)
        while now - self._deaths[0] > policy.crash_loop_window_s:
            self._deaths.popleft()
        recent = len(self._deaths)
        if recent >= policy.crash_loop_deaths:
            self.gave_up = (
                f"crash loop: the engine process died {recent} times within "
                f"{policy.crash_loop_window_s:g} s (last: {reason}); not restarted again"
            )
            return None
        delay = min(policy.backoff_s * 2 ** (recent - 1), policy.backoff_max_s)
        self._next_start = now + delay
        return delay

    def started(self, seconds: float) -> None:
        """Record the first start's duration: the estimate for a restart until one is made."""
        self.startup_s = seconds

    def restarted(self, seconds: float) -> None:
        """Record a restart that serves again, ``seconds`` after it began."""
        self.restarts += 1
        self.startup_s = seconds
        self._next_start = None

    def retry_after_s(self) -> int | None:
        """Whole seconds until the engine is expected to serve again (at least 1), or None:
        the restarts stopped, and waiting will not bring it back."""
        if self.gave_up:
            return None
        if self._next_start is None:
            return 1
        return max(1, math.ceil(self._next_start + self.startup_s - self.clock()))

    def report(self, state: str) -> dict[str, Any]:
        """What ``/health`` shows key holders: the engine's state and its restarts."""
        return {
            "state": state,
            "restarts": self.restarts,
            "last_death": self.last_reason,
            "gave_up": self.gave_up,
        }
