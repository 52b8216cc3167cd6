"""The Space installs from its own requirements.txt into a clean venv and starts.

This is what a Hugging Face Space does with the folder: only the staged Space files,
only the pinned requirements (no loradock), then ``python app.py``. The endpoint is
down on purpose: the page must still come up and say so, not crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
from space_standin import free_port

from loradock.spaces.deploy import stage_space

pytestmark = pytest.mark.slow


def _wait_for_200(url: str, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"app.py did not answer on {url} within {timeout:.0f}s")


def test_space_installs_and_starts_from_its_requirements_alone(tmp_path):
    space = stage_space(tmp_path / "space")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        # --no-compile: what app.py imports compiles as it loads; nothing else needs it.
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
        + ["-r", str(space / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The Space must not lean on loradock being installed.
    probe = subprocess.run([str(python), "-c", "import loradock"], capture_output=True, cwd=space)
    assert probe.returncode != 0

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORADOCK_", "PYTHON"))}
    env |= {
        "LORADOCK_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "LORADOCK_ARENA_DB": str(tmp_path / "arena.sqlite"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        [str(python), "app.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=space,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert _wait_for_200(f"http://127.0.0.1:{port}/", proc, timeout=120) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as response:
            assert b"loradock" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert (tmp_path / "arena.sqlite").is_file()  # the vote store was opened where asked
    assert "Traceback" not in (tmp_path / "app.log").read_text()
