"""HfHub through real huggingface_hub HTTP calls against the test Hub server on 127.0.0.1:
repo creation, preupload + NDJSON commits, listing with Link pagination, revisions, file
resolve headers, tags as aliases, private repos and tokens, and the error mapping."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import httpx
import pytest
from hubserver import PAGE_SIZE
from huggingface_hub import HfApi, constants, hf_hub_download

from loradock.errors import (
    AdapterNotFoundError,
    CardError,
    IntegrityError,
    InvalidNameError,
    LoradockError,
    RevisionNotFoundError,
    StoreError,
)
from loradock.registry.card import build_adapter_card
from loradock.registry.hf_hub import HfHub
from loradock.registry.store import Store
from loradock.settings import get_settings
from tests.helpers.folders import text_folder
from tests.helpers.registry import carded_copy

SECRET = "hf_do_not_print_me_123"

# The test Hub server fixtures (hub_server), registered for this module.
pytest_plugins = ["hubserver.fixtures"]


@pytest.fixture
def hub(hub_server) -> HfHub:
    return HfHub(endpoint=hub_server.url, token=hub_server.token)


def test_is_a_store_and_repr_hides_the_token(hub_server):
    hub = HfHub(endpoint=hub_server.url, token=SECRET)
    assert isinstance(hub, Store) and hub.name == "hf"
    assert SECRET not in repr(hub) and "<set>" in repr(hub)


def test_endpoint_and_token_come_from_the_environment(hub_server, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    hub = HfHub()
    assert hub.endpoint == hub_server.url
    hub.create_repo("envorg/private-one", private=True)  # needs the write token
    assert hub.repo_info("envorg/private-one").private is True
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(AdapterNotFoundError, match="HF_TOKEN"):
        HfHub(token="").repo_info("envorg/private-one")


def test_create_repo_in_org_namespaces_and_spaces(hub, hub_server, tmp_path):
    url = hub.create_repo("org-a/model-one")
    assert url.endswith("/org-a/model-one")
    hub.create_repo("org-b/model-one", private=True)
    assert hub.create_repo("org-a/model-one", exist_ok=True)  # idempotent
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    assert api.model_info("org-b/model-one").private is True

    hub.create_repo("org-a/demo-space", repo_type="space")
    folder = text_folder(tmp_path, "space", {"app.py": "print('hi')\n"})
    commit = hub.upload_folder("org-a/demo-space", folder, commit_message="app", repo_type="space")
    assert ("POST", "/api/spaces/org-a/demo-space/commit/main") in hub_server.requests
    path = hf_hub_download(
        "org-a/demo-space",
        "app.py",
        repo_type="space",
        revision=commit.sha,
        endpoint=hub_server.url,
        cache_dir=tmp_path / "cache",
    )
    assert Path(path).read_text() == "print('hi')\n"


def test_upload_goes_through_preupload_and_an_ndjson_commit(hub, hub_server, tmp_path):
    folder = text_folder(tmp_path, "f", {"a.txt": "alpha", "nested/b.json": '{"b": 1}'})
    hub.create_repo("acme/upload")
    commit = hub.upload_folder("acme/upload", folder, commit_message="two files")
    calls = hub_server.requests
    assert ("POST", "/api/models/acme/upload/preupload/main") in calls
    assert ("POST", "/api/models/acme/upload/commit/main") in calls
    stored = hub_server.storage.get("model", "acme/upload").commits[commit.sha]
    assert stored.title == "two files"
    assert hub_server.storage.read_blob(stored.tree["nested/b.json"]) == b'{"b": 1}'
    # Same content again: the client sees matching oids in the preupload answer; no commit.
    commits_before = calls.count(("POST", "/api/models/acme/upload/commit/main"))
    again = hub.upload_folder("acme/upload", folder, commit_message="no change")
    assert again.sha == commit.sha
    assert calls.count(("POST", "/api/models/acme/upload/commit/main")) == commits_before


def test_listing_follows_link_pagination(hub, hub_server, tmp_path, adapter_dir):
    total = 2 * PAGE_SIZE + 2
    folder = carded_copy(tmp_path, adapter_dir, "a", task="dates", base="acme/base")
    for i in range(total):
        hub.create_repo(f"pager/repo-{i:02d}")
        if i % 2 == 0:
            hub.upload_folder(f"pager/repo-{i:02d}", folder, commit_message="card")
    hub.create_repo("other/repo-x")
    hub_server.requests.clear()

    listed = [r.repo_id for r in hub.list_repos(author="pager")]
    assert listed == [f"pager/repo-{i:02d}" for i in range(total)]
    pages = [c for c in hub_server.requests if c == ("GET", "/api/models")]
    assert len(pages) == 3  # 5 + 5 + 2: followed Link rel="next" twice
    assert len(list(hub.list_repos(limit=PAGE_SIZE + 2))) == PAGE_SIZE + 2
    with_card = list(hub.list_repos(filter=["base_model:adapter:acme/base", "task:dates"]))
    assert [r.repo_id for r in with_card] == [f"pager/repo-{i:02d}" for i in range(0, total, 2)]
    assert all(r.card_data["base_model"] == "acme/base" and len(r.sha) == 40 for r in with_card)
    assert [r.repo_id for r in hub.list_repos(search="REPO-X")] == ["other/repo-x"]


def test_repo_info_at_a_revision_and_resolve_headers(hub, hub_server, tmp_path, adapter_dir):
    hub.create_repo("acme/revs")
    v1 = hub.upload_folder(
        "acme/revs",
        carded_copy(tmp_path, adapter_dir, "v1", task="dates", base="acme/b"),
        commit_message="v1",
    )
    v2 = hub.upload_folder(
        "acme/revs",
        carded_copy(tmp_path, adapter_dir, "v2", task="json", base="acme/b"),
        commit_message="v2",
    )
    old, new = hub.repo_info("acme/revs", revision=v1.sha), hub.repo_info("acme/revs")
    assert (old.sha, new.sha) == (v1.sha, v2.sha)
    assert "task:dates" in old.tags and "task:json" in new.tags
    assert {f.path for f in old.files} >= {"README.md", "adapter_model.safetensors"}

    weights = (adapter_dir / "adapter_model.safetensors").read_bytes()
    url = f"{hub_server.url}/acme/revs/resolve/{v1.sha}/adapter_model.safetensors"
    head = httpx.head(url, headers={"Authorization": f"Bearer {hub_server.token}"})
    # safetensors live in LFS, as on the Hub: a redirect to storage on another origin, the
    # sha256 and size of the linked file in X-Linked-Etag / X-Linked-Size.
    assert head.status_code == 302 and "localhost" in head.headers["Location"]
    assert head.headers["X-Repo-Commit"] == v1.sha
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(weights).hexdigest()
    assert int(head.headers["X-Linked-Size"]) == len(weights)
    assert "X-Xet-Hash" not in head.headers
    body = httpx.get(url.replace(v1.sha, "main"), follow_redirects=True)
    assert body.content == weights
    card = httpx.head(url.replace("adapter_model.safetensors", "README.md"))
    assert card.status_code == 200 and card.headers["X-Repo-Commit"] == v1.sha


def test_tags_are_aliases_plain_huggingface_hub_understands(hub, hub_server, tmp_path):
    hub.create_repo("acme/alias")
    v1 = hub.upload_folder(
        "acme/alias", text_folder(tmp_path, "v1", {"f.txt": "one"}), commit_message="v1"
    )
    hub.upload_folder(
        "acme/alias", text_folder(tmp_path, "v2", {"f.txt": "two"}), commit_message="v2"
    )
    hub.create_tag("acme/alias", tag="prod", revision=v1.sha)
    hub.create_tag("acme/alias", tag="prod", revision=v1.sha)  # same commit: a no-op
    path = hf_hub_download(
        "acme/alias", "f.txt", revision="prod", endpoint=hub_server.url, cache_dir=tmp_path / "c"
    )
    assert Path(path).read_text() == "one"
    snap = hub.snapshot_download("acme/alias", revision="prod", local_dir=tmp_path / "snap")
    assert (snap / "f.txt").read_text() == "one" and not (snap / ".cache").exists()
    assert hub.list_refs("acme/alias").tags == {"prod": v1.sha}
    hub.delete_tag("acme/alias", tag="prod")
    assert hub.list_refs("acme/alias").tags == {}


def test_private_repos_need_a_token(hub, hub_server, tmp_path):
    hub.create_repo("acme/secret", private=True)
    hub.create_repo("acme/open")
    anonymous = HfHub(endpoint=hub_server.url, token="")
    assert [r.repo_id for r in anonymous.list_repos(author="acme")] == ["acme/open"]
    with pytest.raises(AdapterNotFoundError, match="acme/secret"):
        anonymous.repo_info("acme/secret")
    reader = HfHub(endpoint=hub_server.url, token=hub_server.read_token)
    assert reader.repo_info("acme/secret").private is True
    assert {r.repo_id for r in reader.list_repos(author="acme")} == {"acme/open", "acme/secret"}
    with pytest.raises(StoreError, match="write access"):
        reader.upload_folder(
            "acme/secret", text_folder(tmp_path, "x", {"x": "x"}), commit_message="x"
        )


def test_snapshot_download_detects_a_corrupt_server_file(hub, hub_server, tmp_path):
    hub.create_repo("acme/corrupt")
    commit = hub.upload_folder(
        "acme/corrupt", text_folder(tmp_path, "v", {"w.txt": "good"}), commit_message="v"
    )
    entry = hub_server.storage.get("model", "acme/corrupt").commits[commit.sha].tree["w.txt"]
    hub_server.storage.blob_path(entry).write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="w.txt"):
        hub.snapshot_download("acme/corrupt", revision=commit.sha, local_dir=tmp_path / "dl")


def _case_bad_card(hub, server, tmp_path):
    hub.create_repo("acme/badcard")
    folder = text_folder(tmp_path, "bad", {"README.md": "---\nbase_model: [unclosed\n---\nx\n"})
    hub.upload_folder("acme/badcard", folder, commit_message="bad")


def _case_existing_repo(hub, server, tmp_path):
    hub.create_repo("acme/twice")
    hub.create_repo("acme/twice", exist_ok=False)


def _case_offline(hub, server, tmp_path):
    constants.HF_HUB_OFFLINE = True  # restored by the hub_server fixture's monkeypatch
    hub.repo_info("acme/anything")


ERROR_CASES = [
    ("unknown repo", lambda h, s, t: h.repo_info("acme/nope"), AdapterNotFoundError, "acme/nope"),
    (
        "unknown revision",
        lambda h, s, t: (h.create_repo("acme/r"), h.repo_info("acme/r", revision="v9")),
        RevisionNotFoundError,
        "'v9'",
    ),
    (
        "unknown sha",
        lambda h, s, t: (h.create_repo("acme/r"), h.list_commits("acme/r", revision="a" * 40)),
        RevisionNotFoundError,
        "a" * 40,
    ),
    (
        "delete unknown tag",
        lambda h, s, t: (h.create_repo("acme/r"), h.delete_tag("acme/r", tag="prod")),
        RevisionNotFoundError,
        "'prod'",
    ),
    (
        "bad token",
        lambda h, s, t: HfHub(endpoint=s.url, token=SECRET).repo_info("acme/x"),
        StoreError,
        "HF_TOKEN",
    ),
    (
        "anonymous write",
        lambda h, s, t: HfHub(endpoint=s.url, token="").create_repo("acme/anon"),
        StoreError,
        "set HF_TOKEN",
    ),
    (
        "read-only token writes",
        lambda h, s, t: HfHub(endpoint=s.url, token=s.read_token).create_repo("acme/ro"),
        StoreError,
        "write access",
    ),
    (
        "unreachable endpoint",
        lambda h, s, t: HfHub(endpoint="http://127.0.0.1:9", token="x").list_refs("acme/x"),
        StoreError,
        "HF_ENDPOINT",
    ),
    ("offline mode", _case_offline, StoreError, "HF_HUB_OFFLINE"),
    ("repo exists", _case_existing_repo, StoreError, "acme/twice"),
    ("malformed card YAML", _case_bad_card, CardError, "README.md"),
    (
        "not a folder",
        lambda h, s, t: h.upload_folder("acme/x", t / "missing", commit_message="m"),
        StoreError,
        "missing",
    ),
    ("path traversal", lambda h, s, t: h.repo_info("../etc"), InvalidNameError, "'../etc'"),
    (
        "bad revision name",
        lambda h, s, t: h.repo_info("acme/x", revision="../main"),
        InvalidNameError,
        "'../main'",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "quoted"),
    [pytest.param(c, e, q, id=name) for name, c, e, q in ERROR_CASES],
)
def test_errors_are_mapped_and_say_what_to_do(hub, hub_server, tmp_path, call, error, quoted):
    with pytest.raises(error) as info:
        call(hub, hub_server, tmp_path)
    message = str(info.value)
    assert quoted in message
    assert SECRET not in message and hub_server.token not in message
    assert isinstance(info.value, LoradockError)


def test_registry_lifecycle_over_the_hf_store(hub, hub_server, tmp_path, tiny_base, adapter_dir):
    """publish -> sync into a fresh index -> search by base and task -> resolve by alias and
    sha, all through HfHub (the same flow the registry tests run on LocalHub)."""
    from loradock.registry.api import Registry
    from loradock.registry.card import build_base_card

    registry = Registry.open(store=hub)
    registry.publish_base(tiny_base, "acme/tiny-base", card=build_base_card())
    card = build_adapter_card(base_model="acme/tiny-base", task="dates")
    first = registry.publish(adapter_dir, "acme/dates-lora", card=card, aliases=["prod"])
    second = registry.publish(
        adapter_dir,
        "acme/dates-lora",
        card=build_adapter_card(base_model="acme/tiny-base", task="json"),
    )
    assert first.sha != second.sha

    # Another machine: its own empty index and snapshot cache, the same Hub.
    elsewhere = dataclasses.replace(
        get_settings(), index_path=tmp_path / "other.sqlite", cache_dir=tmp_path / "other-snaps"
    )
    fresh = Registry.open(elsewhere, store=HfHub(endpoint=hub_server.url, token=hub_server.token))
    fresh.sync(progress=False)
    found = fresh.search(base_model="acme/tiny-base")
    assert [r.repo_id for r in found] == ["acme/dates-lora"]
    assert fresh.resolve("acme/dates-lora@prod").sha == first.sha
    pinned = fresh.resolve(f"acme/dates-lora@{second.sha}")
    assert pinned.card.task == "json" and (pinned.path / "adapter_model.safetensors").is_file()
