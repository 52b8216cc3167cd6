"""When the engine process dies: restart it after a backoff, or stop restarting after a crash loop.

``ProcessEngine`` reports each death (and each failed restart) to a ``Supervisor`` and waits
the delay it answers before starting a new engine process. The delay doubles with each death
counted in the window (``restart_backoff_s``, 2x, 4x, ... up to ``restart_backoff_max_s``), so
a single kill costs half a second and a process that keeps dying is not restarted in a tight
loop. ``crash_loop_deaths`` deaths within ``crash_loop_window_s`` seconds mean a restart will
not help (a base model that no longer loads, memory that is never enough): the supervisor
gives up, and ``/health`` says why until someone restarts the server.
"""

from __future__ import annotations

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
        return min(policy.backoff_s * 2 ** (recent - 1), policy.backoff_max_s)

    def restarted(self) -> None:
        self.restarts += 1

    def report(self, state: str) -> dict[str, Any]:
        """What ``/health`` shows key holders: the engine's state and its restarts."""
        return {
            "state": state,
            "restarts": self.restarts,
            "last_death": self.last_reason,
            "gave_up": self.gave_up,
        }
