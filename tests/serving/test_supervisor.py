"""The engine process's restart policy: backoff doubling per recent death, capped, a crash
loop that stops the restarts, and the ``Retry-After`` a refused client gets meanwhile (the
live faults: test_faults.py)."""

from __future__ import annotations

import pytest

from loradock.errors import EngineError, QueueFullError, RequestError
from loradock.serving.engines.peft.supervisor import RestartPolicy, Supervisor
from loradock.serving.http.errors import exception_response


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


# Each step: (clock, event, its argument); then the clock the client asks at.
STARTED_2S_DIED = [(0.0, "started", 2.0), (10.0, "died", "killed")]


@pytest.mark.parametrize(
    ("steps", "asked_at", "expected"),
    [
        (STARTED_2S_DIED, 10.0, 3),  # 0.5 s backoff + the 2 s start, rounded up
        (STARTED_2S_DIED, 11.5, 1),  # the start under way: what is left of it
        ([(0.0, "started", 6.0), (10.0, "died", "killed")], 12.0, 5),  # 16.5 - 12 rounded up
        (STARTED_2S_DIED, 30.0, 1),  # a start taking longer than the last: at least 1
        ([*STARTED_2S_DIED, (11.0, "restarted", 3.0), (20.0, "died", "killed")], 20.0, 4),
        ([(10.0, "died", "killed")], 10.0, 1),  # no start measured: the backoff alone
        ([*STARTED_2S_DIED, (13.0, "restarted", 2.0)], 14.0, 1),  # serving again
        ([(0.0, "died", "killed"), (1.0, "died", "killed"), (2.0, "died", "killed")], 2.0, None),
    ],
    ids=[
        "backoff-plus-start",
        "while-starting",
        "counts-down",
        "start-overdue",
        "second-death-uses-the-restart",
        "never-measured",
        "restarted",
        "crash-loop-none",
    ],
)
def test_retry_after_follows_the_restart(steps, asked_at, expected):
    now = [0.0]
    policy = RestartPolicy(
        backoff_s=0.5, backoff_max_s=3.0, crash_loop_deaths=3, crash_loop_window_s=60.0
    )
    supervisor = Supervisor(policy, clock=lambda: now[0])
    for at, event, argument in steps:
        now[0] = at
        getattr(supervisor, event)(argument)
    now[0] = asked_at
    assert supervisor.retry_after_s() == expected


def _engine_error(retry_after_s):
    error = EngineError("restarting")
    error.retry_after_s = retry_after_s
    return error


@pytest.mark.parametrize(
    ("error", "header"),
    [
        (_engine_error(7), "7"),  # what the supervisor expects
        (_engine_error(None), None),  # stopped for good: waiting will not help
        (EngineError("a replica stopped"), "1"),  # no estimate: 503's default
        (QueueFullError("queue full"), "1"),
        (RequestError("bad prompt"), None),
    ],
    ids=["engine-estimate", "engine-gone", "503-default", "429-default", "400-none"],
)
def test_the_retry_after_header(error, header):
    response = exception_response(error, str(error))
    assert response.status_code == error.http_status
    assert response.headers.get("retry-after") == header
