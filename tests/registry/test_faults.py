"""The Hub failing under the registry and the serving resolver: each fault with the outcome
it must have, and nothing lost (the last good sha keeps serving, the index keeps its rows, a
retry makes no second revision, a reader never sees an alias missing).

Faults go through real huggingface_hub HTTP to the test Hub (tests/hubserver, with LFS as on
the Hub, faults injected per route). The disk failing and processes killed mid-write are in
test_durability.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from loradock.errors import IntegrityError, StoreError
from loradock.registry.api import Registry
from loradock.registry.card import build_adapter_card, build_base_card
from loradock.registry.hf_hub import HfHub
from loradock.serving import resolver as resolver_module
from loradock.serving.http.metrics import ServerMetrics
from loradock.serving.resolver import AdapterResolver
from tests.helpers.registry import BASE_ID, clone_adapter

pytest_plugins = ["hubserver.fixtures"]

ADAPTER = "acme/dates"
EVERYTHING = r""  # a pattern every request matches


@pytest.fixture(autouse=True)
def _no_backoff_waits(monkeypatch):
    """huggingface_hub retries 429/5xx and resets with waits of 1, 2, 4, 8 s: the same retries
    here, without the waits."""
    from types import SimpleNamespace

    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda seconds: None))


def _hf_registry(hub_server, token: str | None = None, **hub_options) -> Registry:
    token = hub_server.token if token is None else token
    return Registry.open(store=HfHub(endpoint=hub_server.url, token=token, **hub_options))


@pytest.fixture
def published(hub_server, tiny_base, adapter_dir):
    """The tiny base and an adapter (alias ``prod``) on the test Hub, indexed."""
    registry = _hf_registry(hub_server)
    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    first = registry.publish(adapter_dir, ADAPTER, card=card, aliases=["prod"])
    return registry, first


class _NoEngine:
    def stats(self) -> dict[str, float]:
        return {}


def _resolver(registry: Registry) -> AdapterResolver:
    base = registry.resolve_base(BASE_ID)
    return AdapterResolver(registry, base_name="tiny", base=base, scope="any", cache_ttl_s=0.01)


# -- the Hub failing while the endpoint resolves names ------------------------------------


@pytest.mark.parametrize(
    ("fault", "stale_bound_s", "outcome"),
    [
        pytest.param({"status": 429}, 300.0, "last good sha", id="resolve-429"),
        pytest.param({"status": 503}, 300.0, "last good sha", id="resolve-503"),
        pytest.param({"status": 500}, 300.0, "last good sha", id="resolve-500"),
        pytest.param({"drop": True}, 300.0, "last good sha", id="resolve-reset"),
        pytest.param({"delay_s": 2.0}, 300.0, "last good sha", id="resolve-timeout"),
        pytest.param({"status": 503}, 0.0, "StoreError", id="resolve-503-past-the-bound"),
    ],
)
def test_resolver_serves_the_last_good_sha_while_the_hub_fails(
    hub_server, published, monkeypatch, fault, stale_bound_s, outcome
):
    _, first = published
    registry = _hf_registry(hub_server, timeout_s=1.0)
    resolver = _resolver(registry)
    assert resolver.resolve(f"{ADAPTER}@prod").sha == first.sha
    monkeypatch.setattr(resolver_module, "STALE_IF_ERROR_S", stale_bound_s)
    hub_server.faults.add(EVERYTHING, **fault)
    time.sleep(0.15)  # past the TTL and its stale-while-revalidate window: the store is read
    if outcome == "StoreError":
        with pytest.raises(StoreError):
            resolver.resolve(f"{ADAPTER}@prod")
        assert resolver.stats()["stale_if_error"] == 0
        return
    spec = resolver.resolve(f"{ADAPTER}@prod")
    assert spec.sha == first.sha and spec.path.is_dir()
    assert resolver.stats()["stale_if_error"] == 1
    metrics = ServerMetrics(_NoEngine(), resolver).render().decode()
    assert "loradock_stale_if_error_total 1.0" in metrics  # what /metrics shows
    hub_server.faults.clear()
    time.sleep(0.15)
    assert resolver.resolve(f"{ADAPTER}@prod").sha == first.sha  # read again, fresh


def test_offline_mode_serves_pinned_and_aliased_names_from_the_cache(
    hub_server, published, monkeypatch
):
    from huggingface_hub import constants

    _, first = published
    registry = _hf_registry(hub_server)
    registry.sync(progress=False)
    registry.resolve(f"{ADAPTER}@prod")  # cached while online, as a server does
    registry.resolve_base(BASE_ID)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_server.requests.clear()
    fresh = _hf_registry(hub_server)  # a server started offline: nothing resolved yet
    for name in (f"{ADAPTER}@prod", ADAPTER, f"{ADAPTER}@{first.sha}"):
        assert fresh.resolve(name).sha == first.sha
    assert fresh.resolve_base(BASE_ID).sha
    assert hub_server.requests == []  # not one call reached the Hub
    with pytest.raises(StoreError, match="HF_HUB_OFFLINE"):
        fresh.resolve("acme/never-cached")


# -- every API call within its time limit: a stalling Hub fails it, never hangs it ----------

HUB_CALLS = {
    "listing": (r"^GET /api/models$", lambda hub: list(hub.list_repos())),
    "refs": (rf"^GET /api/models/{ADAPTER}/refs$", lambda hub: hub.list_refs(ADAPTER)),
    "commits": (rf"^GET /api/models/{ADAPTER}/commits/", lambda hub: hub.list_commits(ADAPTER)),
    "info": (rf"^GET /api/models/{ADAPTER}$", lambda hub: hub.repo_info(ADAPTER)),
}
# fault, what the error says, how many requests it takes (None: any). A 429 asking for 1 s
# (2 s with huggingface_hub's margin) is not retried past the limit; a 5xx is retried while
# its backoff fits, and the backoff waits are cut in this module, so its retries are free.
HUB_FAULTS = {
    "stall": ({"delay_s": 5.0}, "did not answer", None),
    "429": ({"status": 429}, "rate limiting", 1),
    "503": ({"status": 503}, "the Hub failed", None),
}


@pytest.mark.parametrize("fault", list(HUB_FAULTS))
@pytest.mark.parametrize("call", list(HUB_CALLS))
def test_hub_api_calls_fail_within_their_time_limit(hub_server, tmp_path, call, fault):
    writer = HfHub(endpoint=hub_server.url, token=hub_server.token)
    writer.create_repo(ADAPTER)
    (tmp_path / "notes.txt").write_text("v1")
    writer.upload_folder(ADAPTER, tmp_path, commit_message="v1")
    # under the 2 s a retry of a 429 or 503 would take at least, over a busy machine's answer
    hub = HfHub(endpoint=hub_server.url, token=hub_server.token, timeout_s=1.5)
    pattern, make_call = HUB_CALLS[call]
    injected, says, requests = HUB_FAULTS[fault]
    rule = hub_server.faults.add(pattern, **injected)
    with pytest.raises(StoreError, match=says) as info:
        make_call(hub)
    assert hub.endpoint in str(info.value) and hub_server.token not in str(info.value)
    assert rule.hits == requests if requests is not None else rule.hits >= 1
    hub_server.faults.clear()
    assert make_call(hub) is not None  # the same client serves again once the Hub does


# -- the Hub failing during sync: only a confirmed 404 removes a repo ----------------------


def _private_and_public(hub_server, registry: Registry, adapter_dir: Path) -> None:
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    registry.publish(adapter_dir, "acme/secret", card=card, private=True)
    registry.sync(progress=False)


@pytest.mark.parametrize(
    ("case", "raises", "repos_after"),
    [
        ("listing-503", StoreError, {ADAPTER, "acme/secret", BASE_ID}),
        ("listing-429", StoreError, {ADAPTER, "acme/secret", BASE_ID}),
        ("listing-reset", StoreError, {ADAPTER, "acme/secret", BASE_ID}),
        ("token-expired", StoreError, {ADAPTER, "acme/secret", BASE_ID}),
        ("token-lost", None, {ADAPTER, "acme/secret", BASE_ID}),
        ("repo-deleted", None, {"acme/secret", BASE_ID}),
        ("repo-deleted-check-503", None, {ADAPTER, "acme/secret", BASE_ID}),
    ],
)
def test_sync_removes_a_repo_only_on_a_confirmed_404(
    hub_server, published, adapter_dir, case, raises, repos_after
):
    registry, _ = published
    _private_and_public(hub_server, registry, adapter_dir)
    syncing = registry
    listing = r"^GET /api/models$"
    if case.startswith("listing-"):
        fault = {"503": {"status": 503}, "429": {"status": 429}, "reset": {"drop": True}}
        hub_server.faults.add(listing, **fault[case.split("-")[1]])
    elif case == "token-expired":
        syncing = Registry.open(store=HfHub(endpoint=hub_server.url, token="hf_expired_token"))
    elif case == "token-lost":
        syncing = Registry.open(store=HfHub(endpoint=hub_server.url, token=""))
    else:
        hub_server.storage.repos.pop(("model", ADAPTER))
        if case.endswith("503"):
            hub_server.faults.add(rf"^GET /api/models/{ADAPTER}$", status=503)
    if raises is not None:
        with pytest.raises(raises):
            syncing.sync(progress=False)
    else:
        report = syncing.sync(progress=False)
        assert report.repos_removed == (case == "repo-deleted")
        if case != "repo-deleted":
            assert any("kept" in line for line in report.errors)
    assert set(registry.index.repos()) == repos_after
    assert registry.index.get("acme/secret").private is True


# -- the Hub failing during publish: a retry makes no second revision -----------------------


@pytest.mark.parametrize(
    ("pattern", "fault", "first_try_fails"),
    [
        pytest.param(r"^POST /api/models/.*/commit/", {"status": 503}, True, id="commit-503"),
        pytest.param(
            r"^POST /api/models/.*/commit/",
            {"after": True, "drop": True},
            True,
            id="commit-made-then-reset",
        ),
        pytest.param(r"^PUT /lfs-upload/", {"status": 500}, False, id="lfs-upload-500-retried"),
        pytest.param(
            r"^POST /api/models/.*/preupload/", {"status": 429}, False, id="preupload-429"
        ),
    ],
)
def test_a_retried_publish_makes_one_revision(
    hub_server, published, tmp_path, adapter_dir, pattern, fault, first_try_fails
):
    registry, first = published
    changed = clone_adapter(adapter_dir, tmp_path / "v2", seed=7)
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    hub_server.faults.add(pattern, times=1, **fault)
    failed = False
    try:
        second = registry.publish(changed, ADAPTER, card=card)
    except StoreError:
        failed = True
        second = registry.publish(changed, ADAPTER, card=card)
    assert failed == first_try_fails
    history = registry.store.list_commits(ADAPTER)
    assert [c.sha for c in history[:2]] == [second.sha, first.sha]  # one new revision
    assert registry.resolve(ADAPTER).sha == second.sha


def test_an_lfs_file_that_does_not_match_its_sha256_is_refused(hub_server, published, tmp_path):
    registry, first = published
    entry = hub_server.storage.get("model", ADAPTER).head.tree["adapter_model.safetensors"]
    assert entry.get("lfs")  # safetensors travel through LFS, as on the Hub
    blob = hub_server.storage.blob_path(entry)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    elsewhere = dataclasses.replace(registry.settings, cache_dir=tmp_path / "other-cache")
    fresh = Registry.open(elsewhere, store=HfHub(endpoint=hub_server.url, token=hub_server.token))
    with pytest.raises(IntegrityError, match="sha256|hash"):
        fresh.resolve(f"{ADAPTER}@{first.sha}")
    assert fresh.snapshots.get(ADAPTER, first.sha) is None  # nothing unverified was kept


# -- aliases moving under readers ---------------------------------------------------------


def _read_while(stop: threading.Event, read, errors: list, seen: set) -> None:
    while not stop.is_set():
        try:
            seen.add(read())
        except Exception as exc:  # what a reader must never see
            errors.append(exc)


@pytest.mark.parametrize("store", ["local", "hf"])
def test_readers_never_see_an_alias_missing_while_it_moves(
    hub_server, registry, tmp_path, tiny_base, adapter_dir, store
):
    if store == "hf":
        registry = _hf_registry(hub_server)
        # The Hub moves a tag by delete + create: make the gap between them wide.
        hub_server.faults.add(r"^POST /api/models/.*/tag/", delay_s=0.3)
    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    shas = [
        registry.publish(
            clone_adapter(adapter_dir, tmp_path / f"v{i}", seed=i), ADAPTER, card=card
        ).sha
        for i in range(2)
    ]
    registry.set_alias(ADAPTER, "prod", shas[0])
    if store == "hf":
        reader = _resolver(registry)
        read = lambda: reader.resolve(f"{ADAPTER}@prod").sha  # noqa: E731
    else:
        read = lambda: registry.store.repo_info(ADAPTER, revision="prod").sha  # noqa: E731
    stop, errors, seen = threading.Event(), [], set()
    readers = [threading.Thread(target=_read_while, args=(stop, read, errors, seen)) for _ in "ab"]
    for t in readers:
        t.start()
    try:
        for i in range(4):
            registry.set_alias(ADAPTER, "prod", shas[(i + 1) % 2])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert errors == [] and seen <= set(shas)
    assert registry.aliases(ADAPTER)["prod"] == shas[0]
