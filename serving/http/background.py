"""Run an app under uvicorn in a background thread (tests, benchmarks, notebooks).

``with BackgroundServer(app) as url:`` starts uvicorn on a free port of 127.0.0.1, waits until
it accepts connections (the engine has started), and stops it on exit.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from loradock.errors import LoradockError


class BackgroundServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 300):
        import uvicorn

        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(self.config)
        self.timeout = timeout
        self.thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise LoradockError("the server did not start (see the log above)")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=60)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
