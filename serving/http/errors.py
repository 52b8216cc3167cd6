"""The OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``, made in one place.

Every error leaves the server through ``error_response`` (a plain HTTP error) or
``error_payload`` (an error raised mid-stream, sent as an SSE event), from ``loradock.errors``'
``http_status`` and ``code``.
"""

from __future__ import annotations

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
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(status: int, message: str, code: str | None, param: str | None = None):
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The error shape for an exception raised mid-stream (sent as an SSE event)."""
    status = getattr(exc, "http_status", 500)
    message = str(exc) if isinstance(exc, LoradockError) else "Internal error while generating"
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
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        parts.append(f"{field}: {msg}{shown}")
    return "Invalid request: " + "; ".join(parts), param
