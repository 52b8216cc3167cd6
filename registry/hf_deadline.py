"""A time limit on one call to the Hub's API, which huggingface_hub does not give.

huggingface_hub's shared ``httpx2.Client`` waits without limit: ``list_models``,
``list_repo_refs`` and ``list_repo_commits`` take no timeout, and its paginated listings pass
``timeout=None`` to every page (``HF_HUB_ETAG_TIMEOUT``/``HF_HUB_DOWNLOAD_TIMEOUT`` cover
file downloads only). A server resolving a name, or a ``registry sync``, must not hang on a
Hub that stalls.

``deadline(seconds)`` sets a deadline for the calls made inside it (a ``ContextVar``, as
huggingface_hub marks its download calls, so each thread has its own). Two event hooks on
huggingface_hub's client enforce it: before each request (a page, a retry) the time left
becomes that request's connect/read/write/pool timeout, and no time left raises
:class:`HubDeadlineError`; a 429 or 5xx answer that huggingface_hub would wait out and retry
past the deadline is raised as the HTTP error it is. huggingface_hub retries timeouts and
network errors, not this error, so the call ends within its limit plus at most one backoff
wait (8 s). Downloads and uploads run without a deadline: their files take as long as
they take, and each read or write of theirs is bounded by huggingface_hub already.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import httpx2
from huggingface_hub.utils import _http, hf_raise_for_status, parse_ratelimit_headers

_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar(
    "loradock_hub_deadline", default=None
)
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")
RETRIED_STATUSES = (429, 500, 502, 503, 504)  # what huggingface_hub waits out and retries
_installed = False
_install_lock = threading.Lock()


class HubDeadlineError(httpx2.TransportError):
    """A call to the Hub ran out of its time limit (not retried by huggingface_hub)."""

    def __init__(self, limit_s: float, request: httpx2.Request):
        self.limit_s = limit_s
        super().__init__(f"no answer within {limit_s:g} s", request=request)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound the Hub API calls made inside the block to ``seconds`` from now, together."""
    install()
    token = _DEADLINE.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def install() -> None:
    """Add the deadline hooks to huggingface_hub's client, and to every one it makes later
    (once per process).

    huggingface_hub offers no getter for its factory and client, so both are read here: the
    factory in force is wrapped, not replaced (a factory set before, for a proxy or custom
    certificates, is kept), and the live client gets the hooks in place rather than being
    closed (``set_client_factory`` would close it under a download another thread runs)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _http._GLOBAL_CLIENT_FACTORY = _with_hooks(_http._GLOBAL_CLIENT_FACTORY)
        live = _http._GLOBAL_CLIENT
        if live is not None:
            _add_hooks(live)
        _installed = True


def _with_hooks(factory: Callable[[], httpx2.Client]) -> Callable[[], httpx2.Client]:
    def make() -> httpx2.Client:
        return _add_hooks(factory())

    return make


def _add_hooks(client: httpx2.Client) -> httpx2.Client:
    hooks = client.event_hooks
    client.event_hooks = {
        "request": [*hooks.get("request", []), _bound_request],
        "response": [*hooks.get("response", []), _refuse_late_retry],
    }
    return client


def _bound_request(request: httpx2.Request) -> None:
    bound = _DEADLINE.get()
    if bound is None:
        return
    left = bound[0] - time.monotonic()
    if left <= 0:
        raise HubDeadlineError(bound[1], request)
    timeouts = request.extensions.get("timeout") or {}
    request.extensions = {
        **request.extensions,
        "timeout": {
            k: left if timeouts.get(k) is None else min(timeouts[k], left) for k in _TIMEOUT_KEYS
        },
    }


def _refuse_late_retry(response: httpx2.Response) -> None:
    """A 429/5xx huggingface_hub would sleep on past the deadline: raised now instead."""
    bound = _DEADLINE.get()
    if bound is None or response.status_code not in RETRIED_STATUSES:
        return
    # huggingface_hub sleeps the announced wait plus 1 s, else a backoff of at least 1 s.
    if bound[0] - time.monotonic() < _announced_wait(response) + 1:
        response.read()  # the error's message comes from the body
        hf_raise_for_status(response)


def _announced_wait(response: httpx2.Response) -> float:
    limits = parse_ratelimit_headers(response.headers)
    if response.status_code == 429 and limits is not None and limits.remaining == 0:
        return float(limits.reset_in_seconds)
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else 0.0


__all__ = ["HubDeadlineError", "deadline", "install"]
