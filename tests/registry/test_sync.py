"""sync/sync_repo: a LocalHub filled with tiny adapters -> the index, incrementally and tolerantly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loradock.errors import AdapterNotFoundError, AliasNotFoundError
from loradock.registry.card import EvalMetric, build_adapter_card, build_base_card
from loradock.registry.hf_hub import HfHub
from loradock.registry.index import Index
from loradock.registry.local_hub import LocalHub
from loradock.registry.search_query import SearchQuery
from loradock.registry.snapshot import SnapshotCache
from loradock.registry.sync import sync, sync_repo

BASE = "acme/tiny-base"

# The test Hub server fixtures (hub_server), registered for this module.
pytest_plugins = ["hubserver.fixtures"]


class CountingStore:
    """A LocalHub that counts snapshot downloads (sync must not fetch base weights)."""

    def __init__(self, hub: LocalHub):
        self._hub = hub
        self.name = hub.name
        self.downloads: list[str] = []

    def snapshot_download(self, repo_id, *, revision, local_dir=None, files=None):
        self.downloads.append(repo_id)
        return self._hub.snapshot_download(
            repo_id, revision=revision, local_dir=local_dir, files=files
        )

    def __getattr__(self, name):
        return getattr(self._hub, name)


@pytest.fixture(params=["local", "hf"])
def hub(request, tmp_path) -> CountingStore:
    """Both stores: LocalHub, and HfHub speaking real huggingface_hub HTTP to the test server."""
    if request.param == "local":
        return CountingStore(LocalHub(tmp_path / "hub"))
    server = request.getfixturevalue("hub_server")
    return CountingStore(HfHub(endpoint=server.url, token=server.token))


@pytest.fixture
def local_hub(tmp_path) -> CountingStore:
    return CountingStore(LocalHub(tmp_path / "hub"))


@pytest.fixture
def index(tmp_path):
    with Index(tmp_path / "index.sqlite") as ix:
        yield ix


def push(hub, tmp_path, folder: Path, repo_id: str, readme: str) -> str:
    """Upload ``folder`` + README.md as one commit straight to the store (no registry API)."""
    staged = tmp_path / "staged" / repo_id.replace("/", "--")
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(folder, staged)
    (staged / "README.md").write_text(readme)
    hub.create_repo(repo_id, exist_ok=True)
    return hub.upload_folder(repo_id, staged, commit_message=f"push {repo_id}").sha


def adapter_card(task: str, value: float | None = None) -> str:
    results = [EvalMetric(task, f"acme/{task}", "exact_match", value)] if value is not None else []
    return build_adapter_card(base_model=BASE, task=task, eval_results=results).to_text()


@pytest.fixture
def filled(hub, tmp_path, tiny_base, tiny_adapter_factory):
    """A base model, two adapters (one with two commits and a prod tag)."""
    push(hub, tmp_path, tiny_base, BASE, build_base_card().to_text())
    a1 = push(hub, tmp_path, tiny_adapter_factory(seed=1), "acme/dates", adapter_card("dates", 0.5))
    a2 = push(hub, tmp_path, tiny_adapter_factory(seed=1), "acme/dates", adapter_card("dates", 0.8))
    hub.create_tag("acme/dates", tag="prod", revision=a1)
    j = push(hub, tmp_path, tiny_adapter_factory(seed=2, r=8), "acme/json", adapter_card("json"))
    return {"dates_v1": a1, "dates_v2": a2, "json": j}


def test_sync_indexes_every_revision_kind_alias_and_metric(hub, index, filled):
    report = sync(hub, index, progress=False)
    assert report.errors == []
    assert (report.repos_seen, report.revisions_added, report.repos_removed) == (3, 4, 0)

    latest = index.get("acme/dates")
    assert latest.sha == filled["dates_v2"] and latest.is_latest
    assert latest.metrics == {"dates/exact_match": 0.8}
    assert latest.kind == "adapter" and latest.base_model == BASE
    assert (latest.peft_type, latest.rank, latest.alpha) == ("LORA", 4, 8.0)
    assert set(latest.target_modules) == {"q_proj", "v_proj"}
    assert latest.size_bytes > 0 and latest.tasks == ("dates",)
    prod = index.get("acme/dates", "prod")
    assert prod.sha == filled["dates_v1"] and prod.aliases == ("prod",)
    assert index.get("acme/json").rank == 8

    base = index.get(BASE)
    assert base.kind == "base" and base.rank is None
    assert BASE not in hub.downloads  # indexed from card metadata: no weights fetched

    assert {r.repo_id for r in index.search(SearchQuery(base_model=BASE))} == {
        "acme/dates",
        "acme/json",
    }
    assert [r.repo_id for r in index.search(SearchQuery(task="json"))] == ["acme/json"]
    best = index.search(SearchQuery(base_model=BASE, task="dates", sort="dates/exact_match"))
    assert [r.sha for r in best] == [filled["dates_v2"]]


def test_second_sync_reads_nothing_new(hub, index, filled):
    sync(hub, index, progress=False)
    hub.downloads.clear()
    report = sync(hub, index, progress=False)
    assert (report.revisions_added, report.repos_unchanged) == (0, 3)
    assert hub.downloads == []


def test_new_commit_and_moved_alias_are_picked_up(
    hub, index, tmp_path, filled, tiny_adapter_factory
):
    sync(hub, index, progress=False)
    v3 = push(hub, tmp_path, tiny_adapter_factory(seed=1), "acme/dates", adapter_card("dates", 0.9))
    hub.create_tag("acme/json", tag="staging", revision=filled["json"])
    report = sync(hub, index, progress=False)
    assert report.revisions_added == 1
    assert index.get("acme/dates").sha == v3
    assert index.get("acme/dates", filled["dates_v2"]).is_latest is False
    assert index.get("acme/json", "staging").sha == filled["json"]
    hub.delete_tag("acme/json", tag="staging")
    sync(hub, index, progress=False)
    with pytest.raises(AliasNotFoundError):
        index.get("acme/json", "staging")


def broken_copy(adapter: Path, tmp_path: Path, what: str) -> Path:
    """A copy of ``adapter`` with its PEFT config truncated (the Hub accepts it, PEFT cannot)."""
    out = tmp_path / f"broken-{what}"
    shutil.copytree(adapter, out)
    (out / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4,')
    return out


def test_broken_repo_is_reported_and_the_rest_indexed(hub, index, tmp_path, filled, adapter_dir):
    broken = broken_copy(adapter_dir, tmp_path, "config")
    push(hub, tmp_path, broken, "acme/broken", adapter_card("dates"))
    report = sync(hub, index, progress=False)
    assert len(report.errors) == 1 and not report.ok
    assert "acme/broken" in report.errors[0] and "adapter_config.json" in report.errors[0]
    assert "acme/broken" not in index.repos()
    assert {"acme/dates", "acme/json", BASE} <= set(index.repos())
    with pytest.raises(AdapterNotFoundError, match="acme/broken"):
        index.get("acme/broken")


def test_malformed_card_yaml_is_reported(local_hub, index, tmp_path, adapter_dir):
    # Only a local hub holds such a card: the Hub refuses the upload (see test_hf_hub.py).
    push(local_hub, tmp_path, adapter_dir, "acme/ok", adapter_card("dates"))
    push(local_hub, tmp_path, adapter_dir, "acme/yaml", "---\nbase_model: [oops\n---\n")
    report = sync(local_hub, index, progress=False)
    assert len(report.errors) == 1 and "acme/yaml" in report.errors[0]
    assert "YAML" in report.errors[0]
    assert index.repos() == ["acme/ok"]


def test_broken_old_revision_is_skipped_head_indexed(hub, index, tmp_path, adapter_dir):
    old = push(
        hub,
        tmp_path,
        broken_copy(adapter_dir, tmp_path, "old"),
        "acme/fixed",
        adapter_card("dates"),
    )
    new = push(hub, tmp_path, adapter_dir, "acme/fixed", adapter_card("dates", 0.7))
    errors: list[str] = []
    assert sync_repo(hub, index, "acme/fixed", errors=errors) == 1
    assert len(errors) == 1 and old in errors[0]
    assert index.known_shas("acme/fixed") == {new}
    assert index.get("acme/fixed").metrics == {"dates/exact_match": 0.7}


def test_repo_deleted_from_the_store_leaves_the_index(local_hub, index, tmp_path, adapter_dir):
    push(local_hub, tmp_path, adapter_dir, "acme/keep", adapter_card("dates"))
    push(local_hub, tmp_path, adapter_dir, "acme/gone", adapter_card("json"))
    sync(local_hub, index, progress=False)
    shutil.rmtree(local_hub.root / "models" / "acme" / "gone")
    report = sync(local_hub, index, progress=False)
    assert report.repos_removed == 1
    assert index.repos() == ["acme/keep"]


def test_author_limits_the_sync_and_its_removals(
    hub, index, tmp_path, filled, tiny_adapter_factory
):
    push(hub, tmp_path, tiny_adapter_factory(seed=4), "other/x", adapter_card("sql"))
    report = sync(hub, index, author="other", progress=False)
    assert (report.repos_seen, report.repos_removed) == (1, 0)
    assert index.repos() == ["other/x"]


def test_snapshots_land_in_the_verified_cache(hub, index, tmp_path, filled):
    cache = SnapshotCache(tmp_path / "snapshots")
    sync(hub, index, progress=False, snapshots=cache)
    assert cache.get("acme/json", filled["json"]) is not None


def test_progress_bar_goes_to_stderr(local_hub, index, tmp_path, adapter_dir, capsys):
    push(local_hub, tmp_path, adapter_dir, "acme/one", adapter_card("dates"))
    assert sync(local_hub, index, progress=True).revisions_added == 1
    assert capsys.readouterr().out == ""


def test_release_tags_are_not_aliases(hub, index, tmp_path, adapter_dir):
    sha = push(hub, tmp_path, adapter_dir, "acme/tagged", adapter_card("dates"))
    hub.create_tag("acme/tagged", tag="v1.0", revision=sha)
    hub.create_tag("acme/tagged", tag="prod", revision=sha)
    assert sync(hub, index, progress=False).errors == []
    assert index.aliases("acme/tagged") == {"prod": sha}
