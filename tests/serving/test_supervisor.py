"""The engine process's restart policy: backoff doubling per recent death, capped, and a crash
loop that stops the restarts (the live faults: test_faults.py)."""

from __future__ import annotations

import pytest

from loradock.serving.engines.peft.supervisor import RestartPolicy, Supervisor


@pytest.mark.parametrize(
    ("deaths", "expected"),
    [
        ([0], [0.5]),
        ([0, 1, 2], [0.5, 1.0, 2.0]),
        ([0, 1, 2, 3, 4, 5], [0.5, 1.0, 2.0, 3.0, 3.0, None]),
        ([0, 100, 200, 300], [0.5, 0.5, 0.5, 0.5]),  # each death alone in the window: no loop
    ],
    ids=["first", "doubling", "capped-then-crash-loop", "spread-out"],
)
def test_restart_policy(deaths, expected):
    now = [0.0]
    policy = RestartPolicy(
        backoff_s=0.5, backoff_max_s=3.0, crash_loop_deaths=6, crash_loop_window_s=60.0
    )
    supervisor = Supervisor(policy, clock=lambda: now[0])
    delays = []
    for at in deaths:
        now[0] = at
        delays.append(supervisor.died(f"death at {at}"))
    assert delays == expected
    assert (supervisor.gave_up is not None) == (expected[-1] is None)
