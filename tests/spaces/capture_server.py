"""A hostile endpoint for the Space's security tests: a tiny HTTP server on 127.0.0.1.

It records every request it receives (method, path, headers, body) and answers like a
loradock endpoint with made-up names, so the Space happily talks to it: what a visitor
who types their own URL into "Endpoint settings" would run to harvest the Space's key
or to put names on its shared arena.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAKE_BASE = "evil/base"
FAKE_ADAPTER = "evil/adapter"


@dataclass
class Captured:
    url: str
    requests: list[dict] = field(default_factory=list)

    def seen(self, secret: str) -> bool:
        """Whether ``secret`` arrived anywhere: a header, the path or a body."""
        return any(secret in json.dumps(r) for r in self.requests)

    def authorizations(self) -> list[str]:
        return [r["headers"].get("authorization", "") for r in self.requests]


def _answer(path: str) -> dict:
    if path.startswith("/v1/models"):
        return {
            "object": "list",
            "data": [{"id": FAKE_BASE, "parent": None}, {"id": FAKE_ADAPTER, "parent": FAKE_BASE}],
        }
    if path.startswith("/v1/registry/adapters"):
        row = {"repo_id": FAKE_ADAPTER, "kind": "adapter", "base_model": FAKE_BASE}
        return {"object": "list", "data": [row | {"tasks": ["dates"], "metrics": {}}]}
    return {"error": {"message": "nothing here", "code": "not_found"}}


def _handler(captured: Captured) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            captured.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(errors="replace"),
                }
            )
            return body

        def _send(self, status: int, payload: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._record()
            self._send(200, json.dumps(_answer(self.path)).encode(), "application/json")

        def do_POST(self):  # noqa: N802
            body = json.loads(self._record() or b"{}")
            chunk = {
                "choices": [{"index": 0, "delta": {"content": f"hi from {body.get('model')}"}}]
            }
            events = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            self._send(200, events, "text/event-stream")

        def log_message(self, *args):  # keep the test output clean
            pass

    return Handler


@contextmanager
def capture_server() -> Iterator[Captured]:
    """Serve on a free port of 127.0.0.1; yields the record, which fills as requests come."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    captured = Captured(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(captured)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield captured
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
