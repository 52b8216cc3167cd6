"""``loradock serve`` as a user runs it: a server process plus its engine process. Ctrl-C stops
both cleanly; if the server is killed outright, its engine process does not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.processes import free_port, server_process
from tests.helpers.serving import BASE_ID, publish_fixture_registry


def _serve(home: Path, log: Path, port: int):
    """``loradock serve`` over ``home``, its output in ``log``: a context manager (see
    ``server_process``) yielding the process once the server is healthy."""
    env = {**os.environ, "LORADOCK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    args = ["serve", "--base", BASE_ID, "--port", str(port), "--dtype", "float32",
            "--threads", "1", "--max-model-len", "128"]  # fmt: skip
    return server_process(
        [sys.executable, "-m", "loradock.cli", *args],
        ready_url=f"http://127.0.0.1:{port}/health",
        log=log,
        env=env,
        start_new_session=True,  # its own process group, like a shell job
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory, serving_base):
    root = tmp_path_factory.mktemp("serve-home")
    publish_fixture_registry(root, serving_base, serving_base.parent / "adapter", n=1)
    return root


def _engine_children(proc: subprocess.Popen) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "no engine process under the server"
    return children


def test_ctrl_c_stops_server_and_engine(home, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    with _serve(home, log, port) as proc:
        body = {"model": BASE_ID, "prompt": "Convert 3 March 2024:", "max_tokens": 4}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
        children = _engine_children(proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
        assert proc.wait(timeout=90) == 0, log.read_text()[-2000:]
    out = log.read_text()
    assert "KeyboardInterrupt" not in out and "Traceback" not in out, out[-2000:]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_engine_does_not_outlive_a_killed_server(home, tmp_path):
    with _serve(home, tmp_path / "serve.log", free_port()) as proc:
        children = _engine_children(proc)
        proc.kill()  # no shutdown at all: the engine sees its pipe close
        proc.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=30)
    for child in alive:
        child.kill()
    assert not alive
