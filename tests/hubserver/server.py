"""Run the test Hub server on 127.0.0.1 in a background thread (uvicorn), on a free port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from .app import create_app
from .faults import FaultMiddleware, Faults
from .storage import HubStorage

WRITE_TOKEN = "hf_loradock_test_write"
READ_TOKEN = "hf_loradock_test_read"
# Small pages in tests, so that a handful of repos crosses page boundaries.
PAGE_SIZE = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HubServer:
    """A Hub-API server for tests: ``with HubServer(tmp) as hub: HfApi(endpoint=hub.url)``.

    ``token`` may write everything, ``read_token`` only read (private repos included);
    anonymous callers see public repos only. ``faults`` makes it fail on purpose
    (see ``faults.py``).
    """

    def __init__(self, root: str | Path, *, page_size: int = 1000):
        self.storage = HubStorage(root)
        self.token = WRITE_TOKEN
        self.read_token = READ_TOKEN
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app = create_app(
            self.storage, {WRITE_TOKEN: "write", READ_TOKEN: "read"}, page_size=page_size
        )
        self.faults = Faults()
        config = uvicorn.Config(
            FaultMiddleware(app, self.faults),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test Hub server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request since the last :meth:`reset`."""
        return self.app.state.requests

    def reset(self) -> None:
        """Forget every repo, request and fault (between tests sharing one server)."""
        self.faults.clear()
        self.storage.reset()
        self.app.state.requests.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
