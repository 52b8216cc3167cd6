"""The resolver's name cache: fresh names skip the store, expired ones are served while ONE
background read refreshes them, and concurrent first requests for a name read the store once."""

from __future__ import annotations

import threading
import time

import pytest

from loradock.errors import AdapterNotFoundError
from loradock.serving import resolver as resolver_module
from loradock.serving.resolver import AdapterResolver
from tests.helpers.registry import clone_adapter
from tests.helpers.serving import BASE_ID, publish_fixture_registry


class CountingRegistry:
    """The real registry, counting (and optionally slowing or failing) ``resolve`` calls."""

    def __init__(self, registry, delay: float = 0.0):
        self.registry = registry
        self.delay = delay
        self.calls = 0
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def resolve(self, name, **options):
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return self.registry.resolve(name, **options)

    def show(self, name):  # the index lookup deciding whether a name is in scope
        return self.registry.show(name)


@pytest.fixture
def store(tmp_path, serving_base):
    return publish_fixture_registry(
        tmp_path / "reg", serving_base, serving_base.parent / "adapter", 2
    )


def _resolver(store, registry, ttl: float) -> AdapterResolver:
    return AdapterResolver(registry, base_name=BASE_ID, base=store.base, cache_ttl_s=ttl)


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_fresh_names_skip_the_store(store):
    counting = CountingRegistry(store.registry)
    resolver = _resolver(store, counting, ttl=60)
    spec = resolver.resolve("acme/adapter-000")
    for _ in range(5):
        assert resolver.cached("acme/adapter-000") == (True, spec)
    assert counting.calls == 1
    assert resolver.cached("acme/adapter-001") == (False, None)  # never resolved: read it
    assert resolver.cached(BASE_ID) == (True, None)


def test_expired_name_is_served_while_one_refresh_reads_the_move(store, tmp_path):
    counting = CountingRegistry(store.registry, delay=0.2)
    resolver = _resolver(store, counting, ttl=0.05)
    old = resolver.resolve("acme/adapter-000@prod")
    # A new revision takes the alias: the cache must notice after its TTL.
    new_folder = clone_adapter(store.root / "src-1", tmp_path / "v2", seed=42)
    from loradock.registry.card import build_adapter_card

    card = build_adapter_card(base_model=BASE_ID, task="json")
    moved = store.registry.publish(new_folder, "acme/adapter-000", card=card, aliases=("prod",))
    assert moved.sha != old.sha
    time.sleep(0.06)
    # Expired: every request still answers at once with the old spec; one read runs behind.
    for _ in range(10):
        assert resolver.cached("acme/adapter-000@prod") == (True, old)
    _wait_for(lambda: resolver.cached("acme/adapter-000@prod")[1].sha == moved.sha)
    assert counting.calls == 2  # the first resolve, then ONE refresh for ten stale hits


@pytest.mark.parametrize(
    "failure",
    [AdapterNotFoundError("gone"), OSError("store unreachable")],
    ids=["deleted", "unreachable"],
)
def test_failed_refresh_forgets_the_name(store, failure):
    counting = CountingRegistry(store.registry)
    resolver = _resolver(store, counting, ttl=0.05)
    resolver.resolve("acme/adapter-001")
    time.sleep(0.06)
    counting.fail = failure
    assert resolver.cached("acme/adapter-001")[0]  # served stale while the refresh fails
    _wait_for(lambda: resolver.cached("acme/adapter-001") == (False, None))
    with pytest.raises(type(failure)):  # the next request reads the store and gets the error
        resolver.resolve("acme/adapter-001")


def test_too_old_entries_are_read_again(store, monkeypatch):
    monkeypatch.setattr(resolver_module, "STALE_TTLS", 2)
    counting = CountingRegistry(store.registry)
    resolver = _resolver(store, counting, ttl=0.05)
    resolver.resolve("acme/adapter-000")
    time.sleep(0.12)  # more than (STALE_TTLS - 1) TTLs past expiry
    assert resolver.cached("acme/adapter-000") == (False, None)
    assert counting.calls == 1  # and no background read was started for it


def test_concurrent_first_requests_read_the_store_once(store):
    counting = CountingRegistry(store.registry, delay=0.2)
    resolver = _resolver(store, counting, ttl=60)
    specs = []
    threads = [
        threading.Thread(target=lambda: specs.append(resolver.resolve("acme/adapter-001")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.calls == 1
    assert len(specs) == 8 and len({s.sha for s in specs}) == 1
