"""The same behavioural checks (``store_contract.py``) over BOTH stores: ``LocalHub`` on a
folder and ``HfHub`` talking real huggingface_hub HTTP to the test Hub server."""

from __future__ import annotations

import pytest
import store_contract

from loradock.registry.hf_hub import HfHub
from loradock.registry.local_hub import LocalHub
from loradock.registry.store import Store

# The test Hub server fixtures (hub_server), registered for this module.
pytest_plugins = ["hubserver.fixtures"]


@pytest.fixture(params=["local", "hf"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return LocalHub(tmp_path / "hub")
    server = request.getfixturevalue("hub_server")
    return HfHub(endpoint=server.url, token=server.token)


def test_both_stores_implement_the_protocol(store):
    assert isinstance(store, Store)


@pytest.mark.parametrize("check", store_contract.ALL_CHECKS, ids=lambda f: f.__name__)
def test_store_contract(check, store, tmp_path, adapter_dir):
    check(store, tmp_path, adapter_dir)


def test_every_check_is_in_all_checks():
    # A check_* function left out of ALL_CHECKS would never run against either store.
    defined = {f for name, f in vars(store_contract).items() if name.startswith("check_")}
    assert defined == set(store_contract.ALL_CHECKS)
