"""How the test Hub server fails: the Hub's status codes and ``X-Error-Code`` values."""

from __future__ import annotations

# The Hub's exact wording: huggingface_hub tells a bad token from a missing repo by it.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


class HubError(Exception):
    """Answered as ``{"error": message}`` with ``X-Error-Code``/``X-Error-Message`` headers."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def safe_path(path: str) -> str:
    if not path or path.startswith("/") or "\\" in path or ".." in path.split("/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path
