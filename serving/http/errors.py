"""The OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``, made in one place.

Every error leaves the server through ``exception_response`` (a loradock error, with its
``Retry-After`` when it has one), ``error_response`` (a plain HTTP error) or ``error_payload``
(an error raised mid-stream, sent as an SSE event), from ``loradock.errors``' ``http_status``
and ``code``. Messages pass through ``Redactor`` first: an error raised
deep in the registry may name a file of the server's disk, and a client learns the repo and
revision from it, never the server's folders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from loradock.errors import LoradockError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


# How long a client told "queue full" (429) or "unavailable" (503) waits before trying again,
# in seconds, unless the error knows better (``retry_after``).
RETRY_AFTER_S = 1
SERVER_PATH = "<server path>"


class Redactor:
    """Replaces the server's own folders in a message with ``<server path>``.

    A folder counts only where a path starts (not inside ``acme/rootkit`` for ``/root``) and
    only whole (``/srv/lh`` does not match ``/srv/lhx``)."""

    def __init__(self, roots: Iterable[str | Path]):
        # longest first, so a snapshot folder inside the home folder goes whole
        found = sorted({str(Path(r)) for r in roots if r and len(str(Path(r))) > 1}, key=len)
        alternatives = "|".join(re.escape(r) for r in reversed(found))
        self.pattern = (
            re.compile(rf"(?<![\w.\-/~])(?:{alternatives})(?![\w.\-])") if found else None
        )

    def __call__(self, message: str) -> str:
        return self.pattern.sub(SERVER_PATH, message) if self.pattern else message


def error_response(
    status: int,
    message: str,
    code: str | None,
    param: str | None = None,
    *,
    retry_after_s: int | None = None,
) -> JSONResponse:
    """The error; ``retry_after_s``: sent as ``Retry-After`` (None: no such header)."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


def exception_response(exc: LoradockError, message: str) -> JSONResponse:
    """``exc`` answered with ``message`` (its redacted text), its status, code and
    ``Retry-After``."""
    return error_response(exc.http_status, message, exc.code, retry_after_s=retry_after(exc))


def retry_after(exc: LoradockError) -> int | None:
    """When a client refused with ``exc`` may try again, in seconds, or None: not by waiting.

    An error may carry its own ``retry_after_s`` (an engine that is restarting knows when it
    expects to serve again; one stopped for good says None); else 429 and 503 say 1 s."""
    if hasattr(exc, "retry_after_s"):
        return exc.retry_after_s
    return RETRY_AFTER_S if exc.http_status in (429, 503) else None


def error_payload(exc: BaseException, redact: Redactor) -> dict[str, Any]:
    """The error shape for an exception raised mid-stream (sent as an SSE event)."""
    status = getattr(exc, "http_status", 500)
    message = str(exc) if isinstance(exc, LoradockError) else "Internal error while generating"
    message = redact(message)
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": getattr(exc, "code", "internal_error"),
        }
    }


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        param = param or field
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {_short(got)})"
        parts.append(f"{field}: {msg}{shown}")
    return "Invalid request: " + "; ".join(parts), param


def _short(value: Any, limit: int = 80) -> str:
    """A value as the message shows it: a megabyte prompt is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]} ({len(text)} chars)"
