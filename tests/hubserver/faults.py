"""Fault injection for the test Hub: what a real Hub, a proxy or a network does on a bad day.

A test adds rules through the fixture (``hub_server.faults.add("POST .*/commit/", status=503,
times=2)``); each request is matched against ``"METHOD /path"`` (a regular expression, searched)
and the first rule with hits left acts on it:

- ``status``: answered with that status (429 carries ``Retry-After``) instead of the handler;
- ``delay_s``: held that long first (a slow Hub, or a timeout when the client gives up sooner);
- ``drop``: the connection is aborted without an answer (a reset);
- ``after``: the handler runs first and its answer is thrown away (then ``drop`` or ``status``):
  the change is made on the Hub, the client never hears of it;
- ``times``: how many matching requests it hits (None: until cleared).

The middleware wraps the whole app (outside Starlette's error handling) so that a drop reaches
uvicorn's transport and the client sees a real connection reset.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Fault:
    pattern: str
    status: int | None = None
    delay_s: float = 0.0
    drop: bool = False
    after: bool = False
    times: int | None = None
    hits: int = 0

    def matches(self, request_line: str) -> bool:
        return (self.times is None or self.hits < self.times) and bool(
            re.search(self.pattern, request_line)
        )


class Faults:
    """The rules in force; thread-safe (the server runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(
        self,
        pattern: str,
        *,
        status: int | None = None,
        delay_s: float = 0.0,
        drop: bool = False,
        after: bool = False,
        times: int | None = None,
    ) -> Fault:
        if status is None and not drop and not delay_s:
            raise ValueError("a fault needs a status, a delay or drop=True")
        fault = Fault(pattern, status, delay_s, drop, after, times)
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        line = f"{method} {path}"
        with self._lock:
            for fault in self._rules:
                if fault.matches(line):
                    fault.hits += 1
                    return fault
        return None


class FaultMiddleware:
    """ASGI middleware applying :class:`Faults` to every HTTP request."""

    def __init__(self, app: Any, faults: Faults):
        self.app, self.faults = app, faults

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fault = self.faults.take(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.after:
            await self.app(scope, receive, _discard)
        if fault.drop:
            _abort(send)
        elif fault.status is not None:
            await _answer(send, fault.status)
        elif not fault.after:
            await self.app(scope, receive, send)


async def _discard(message: dict) -> None:
    return None


def _abort(send: Any) -> None:
    # uvicorn's ``send`` is a bound method of the request cycle, which holds the transport.
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionResetError("fault injection: connection dropped")
    transport.abort()
    cycle.disconnected = True  # so uvicorn neither answers 500 nor logs a missing response


async def _answer(send: Any, status: int) -> None:
    body = json.dumps({"error": f"injected fault: HTTP {status}"}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-error-message", f"injected fault: HTTP {status}".encode()),
    ]
    if status == 429:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
