"""Fixtures of the Space's tests: a stand-in loradock endpoint served on 127.0.0.1."""

from __future__ import annotations

import pytest
from space_standin import create_standin, run_server


@pytest.fixture(scope="module")
def standin_url():
    """A stand-in endpoint (no API key) for the module's tests."""
    with run_server(create_standin(token_delay=0.01)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_standin_url():
    """A stand-in endpoint that requires the API key ``sekret``."""
    with run_server(create_standin(api_key="sekret")) as url:
        yield url
