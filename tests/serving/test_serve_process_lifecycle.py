"""``loradock serve`` as a user runs it: a server process plus its engine process. Ctrl-C stops
both cleanly; if the server is killed outright, its engine process does not outlive it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.serving.conftest import BASE_ID, publish_fixture_registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(home, port: int) -> subprocess.Popen:
    env = {**os.environ, "LORADOCK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    args = ["serve", "--base", BASE_ID, "--port", str(port), "--dtype", "float32",
            "--threads", "1", "--max-model-len", "128"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "loradock.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.communicate()[1][-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the server did not become healthy in 180 s")


@pytest.fixture(scope="module")
def home(tmp_path_factory, serving_base):
    root = tmp_path_factory.mktemp("serve-home")
    publish_fixture_registry(root, serving_base, serving_base.parent / "adapter", n=1)
    return root


def _engine_children(proc: subprocess.Popen) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "no engine process under the server"
    return children


def test_ctrl_c_stops_server_and_engine(home):
    port = _free_port()
    proc = _start(home, port)
    body = {"model": BASE_ID, "prompt": "Convert 3 March 2024:", "max_tokens": 4}
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
    children = _engine_children(proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-2000:]
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err[-2000:]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_engine_does_not_outlive_a_killed_server(home):
    proc = _start(home, _free_port())
    children = _engine_children(proc)
    proc.kill()  # no shutdown at all: the engine sees its pipe close
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=30)
    for child in alive:
        child.kill()
    assert not alive
