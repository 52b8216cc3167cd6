"""Servers run as subprocesses: a free port, start until healthy, stop for sure."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


@contextmanager
def server_process(
    cmd: Sequence[str],
    *,
    ready_url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    **popen_options,
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` with its output in ``log``; yield the process once ``ready_url`` answers
    200. The test fails (with the log's tail) if it exits first or is not ready within
    ``timeout`` seconds. On exit a process still running gets SIGTERM, then SIGKILL."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, **popen_options
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(ready_url):
            if proc.poll() is not None:
                pytest.fail(f"{cmd[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{ready_url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
