"""What a request must pass before the app reads its body: the key, then a size limit.

FastAPI reads and parses a JSON body before any dependency runs, so a key check written as a
dependency comes too late: an unauthenticated client could make the server read and parse
any amount of JSON. ``RequestGate`` is a pure ASGI middleware that decides from the headers:

- the key (``auth.KeyChecker``): the route's level comes from its path (``public``,
  ``admin`` for ``/v1/adapters/...``, ``api`` for everything else, unknown paths included);
- a declared ``Content-Length`` over the limit is a 413 before one byte of the body is read;
- a chunked body (no length) is counted while it arrives, held (at most the limit), and
  handed to the app whole; past the limit it is a 413 and the rest is never read.

A refusal is sent after the rest of the body is read and dropped (never held, never parsed),
for at most ``DRAIN_BYTES`` and ``DRAIN_SECONDS``, and then closes the connection: a server
that closes a socket with unread bytes in it resets the connection, and the client would get
a reset instead of its 401 or 413. A body declared larger than ``DRAIN_BYTES`` is not read at
all: its sender gets the answer, or a reset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from starlette.datastructures import Headers

from loradock.errors import LoradockError, PayloadTooLargeError
from loradock.serving.http.auth import KeyChecker, Level
from loradock.serving.http.errors import exception_response

ADMIN_PREFIX = "/v1/adapters/"
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 5.0
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestGate:
    def __init__(
        self, app: Any, *, keys: KeyChecker, max_body_bytes: int, public_paths: Collection[str]
    ):
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.public_paths = frozenset(public_paths)

    def level(self, path: str) -> Level:
        if path in self.public_paths:
            return "public"
        return "admin" if path.startswith(ADMIN_PREFIX) else "api"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        declared = int(length) if length is not None and length.strip().isdigit() else None
        problem = self.keys.problem(self.level(scope["path"]), headers.get("authorization"))
        if problem is not None:
            await _refuse(problem, scope, receive, send, declared)
            return
        if length is not None:
            # uvicorn refuses a malformed length itself; an over-long one is refused here
            if declared is not None and declared > self.max_body_bytes:
                await _refuse(self._too_large(declared), scope, receive, send, declared)
                return
            await self.app(scope, receive, send)
            return
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            await self.app(scope, receive, send)  # no body
            return
        await self._chunked(scope, receive, send)

    async def _chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_BYTES - size)
                await _refuse(self._too_large(None), scope, receive, send, 0)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()  # after the body: the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, length: int | None) -> PayloadTooLargeError:
        told = f"{length} bytes" if length is not None else "a chunked body past that"
        return PayloadTooLargeError(
            f"Request body too large: this server accepts at most {self.max_body_bytes} bytes "
            f"(max_request_bytes), got {told}. Send a shorter prompt."
        )


async def _refuse(
    exc: LoradockError, scope: Scope, receive: Receive, send: Send, body_bytes: int | None
) -> None:
    """Answer ``exc`` and close; ``body_bytes``: the body still to come (None: chunked, or
    unknown), dropped first when there is not too much of it."""
    chunked = "chunked" in Headers(scope=scope).get("transfer-encoding", "").lower()
    if body_bytes is None and chunked:
        await _drain(receive, DRAIN_BYTES)
    elif body_bytes and body_bytes <= DRAIN_BYTES:
        await _drain(receive, body_bytes)
    response = exception_response(exc, str(exc))
    response.headers["connection"] = "close"
    await response(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the body, at most ``budget`` bytes and ``DRAIN_SECONDS``."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while budget > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
