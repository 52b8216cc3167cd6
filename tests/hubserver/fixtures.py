"""pytest fixtures for the test Hub server; a test module registers them with

    pytest_plugins = ["hubserver.fixtures"]

(``tests/`` is on ``sys.path`` through pytest's rootdir conftest, so this imports from any
test folder).

One server runs per test session (starting uvicorn costs time); each test gets it emptied,
with huggingface_hub switched online for 127.0.0.1 only and Xet disabled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import PAGE_SIZE, HubServer


@pytest.fixture(scope="session")
def _hub_server_session(tmp_path_factory) -> Iterator[HubServer]:
    with HubServer(tmp_path_factory.mktemp("hubserver"), page_size=PAGE_SIZE) as server:
        yield server


@pytest.fixture
def hub_server(_hub_server_session: HubServer, monkeypatch) -> Iterator[HubServer]:
    """An empty Hub-API server on 127.0.0.1; HF_ENDPOINT points at it for this test."""
    from huggingface_hub import constants

    server = _hub_server_session
    server.reset()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # huggingface_hub reads these at import time: patch the module constants too. Not
    # constants.ENDPOINT: hf_hub_url swaps that prefix of its URL template for `endpoint=`,
    # so it must keep the value the template was built with; HfHub passes endpoint= always.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    yield server
