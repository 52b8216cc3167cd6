"""The Registry facade over a LocalHub: publish -> sync -> search -> resolve, end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    BaseModelNotFoundError,
    CardError,
    RevisionNotFoundError,
)
from loradock.registry import (
    EvalMetric,
    Registry,
    SearchQuery,
    build_adapter_card,
    build_base_card,
)
from loradock.registry.index import Index
from tests.helpers.registry import BASE_ID, NARROW_BASE_ID


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _card(task: str = "dates", **kw):
    return build_adapter_card(base_model=BASE_ID, task=task, datasets=["acme/dates"], **kw)


def test_open_uses_settings(registry):
    from loradock.registry.local_hub import LocalHub
    from loradock.settings import get_settings

    settings = get_settings()
    assert isinstance(registry.store, LocalHub) and registry.store.root == settings.hub_dir
    assert isinstance(registry.index, Index)
    assert settings.index_path.is_file()


def test_publish_then_resolve_latest_sha_and_alias(registry_with_base, adapter_dir):
    reg = registry_with_base
    before = _tree_hash(adapter_dir)
    v1 = reg.publish(adapter_dir, "acme/dates-lora", card=_card(), aliases=["prod"])
    assert _tree_hash(adapter_dir) == before  # the user's folder is never touched
    v2 = reg.update_card(
        "acme/dates-lora",
        v1.card.with_eval_results([EvalMetric("dates", "acme/dates", "exact_match", 0.8)]),
    )
    assert v2.sha != v1.sha

    latest = reg.resolve("acme/dates-lora")
    pinned = reg.resolve(f"acme/dates-lora@{v1.sha}")
    prod = reg.resolve("acme/dates-lora@prod")
    assert latest.sha == v2.sha and pinned.sha == v1.sha and prod.sha == v1.sha
    assert latest.card.metrics == {"dates/exact_match": 0.8}
    assert pinned.card.metrics == {}
    assert latest.artifact.rank == 4 and latest.artifact.base_model == BASE_ID
    config = json.loads((pinned.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_ID  # not the trainer's local path
    assert pinned.path == reg.settings.cache_dir / "acme" / "dates-lora" / v1.sha


def test_second_resolve_of_a_pinned_sha_skips_the_store(registry_with_base, adapter_dir):
    reg = registry_with_base
    v1 = reg.publish(adapter_dir, "acme/dates-lora", card=_card())
    first = reg.resolve(f"acme/dates-lora@{v1.sha}")

    class NoStore:
        name = "unreachable"

        def __getattr__(self, item):
            raise AssertionError(f"store.{item} called for a cached pinned revision")

    offline = Registry(NoStore(), settings=reg.settings)
    again = offline.resolve(f"acme/dates-lora@{v1.sha}")
    assert again.path == first.path and again.sha == v1.sha


def test_altered_cache_is_fetched_again(registry_with_base, adapter_dir):
    reg = registry_with_base
    v1 = reg.publish(adapter_dir, "acme/dates-lora", card=_card())
    path = reg.resolve(f"acme/dates-lora@{v1.sha}").path
    (path / "adapter_model.safetensors").write_bytes(b"garbage")
    again = reg.resolve(f"acme/dates-lora@{v1.sha}")
    assert again.artifact.rank == 4  # re-fetched and verified, not the garbage


def test_end_to_end_search_by_base_and_task(registry_with_base, tiny_adapter_factory):
    reg = registry_with_base
    dates = reg.publish(
        tiny_adapter_factory(seed=1), "acme/dates-lora", card=_card("dates"), aliases=["prod"]
    )
    json_v1 = reg.publish(tiny_adapter_factory(seed=3), "acme/json-lora", card=_card("json"))
    json_v2 = reg.update_card(
        "acme/json-lora",
        json_v1.card.with_eval_results([EvalMetric("json", "acme/json", "valid", 0.9)]),
    )
    reg.set_alias("acme/json-lora", "staging", json_v1.sha)

    by_base = reg.search(base_model=BASE_ID)
    assert {r.repo_id for r in by_base} == {"acme/dates-lora", "acme/json-lora"}
    (by_task,) = reg.search(task="json")
    assert by_task.repo_id == "acme/json-lora" and by_task.sha == json_v2.sha  # latest only
    assert by_task.metrics == {"json/valid": 0.9}
    assert [r.repo_id for r in reg.search(base_model=BASE_ID, task="dates")] == ["acme/dates-lora"]
    assert reg.search(task="summaries") == []
    assert {r.repo_id for r in reg.search(kind="base")} >= {BASE_ID}
    # A SearchQuery, and keywords that replace its fields, ask the same as plain keywords.
    on_base = SearchQuery(base_model=BASE_ID)
    assert reg.search(on_base) == by_base
    assert [r.repo_id for r in reg.search(on_base, task="dates")] == ["acme/dates-lora"]
    with pytest.raises(TypeError, match="base"):
        reg.search(base="acme/tiny-base")  # the field is base_model: never silently ignored

    # Aliases resolve in the index and in the store alike.
    assert reg.show("acme/json-lora@staging").sha == json_v1.sha
    assert reg.resolve("acme/json-lora@staging").sha == json_v1.sha
    assert reg.show("acme/dates-lora@prod").sha == dates.sha
    assert reg.resolve(f"acme/json-lora@{json_v1.sha}").card.metrics == {}

    # The facade's read-only views: compatible, aliases, revisions, describe.
    assert {r.repo_id for r in reg.compatible(BASE_ID)} == {"acme/dates-lora", "acme/json-lora"}
    assert reg.compatible(BASE_ID, max_rank=2) == []
    assert len(reg.compatible(BASE_ID, limit=1)) == 1
    assert reg.aliases("acme/json-lora") == {"staging": json_v1.sha}
    assert [r.sha for r in reg.revisions("acme/json-lora")] == [json_v2.sha, json_v1.sha]
    details = reg.describe("acme/json-lora@staging")
    assert details.record.sha == json_v1.sha
    assert details.aliases == {"staging": json_v1.sha}
    assert [r.sha for r in details.revisions] == [json_v2.sha, json_v1.sha]


def test_sync_limited_to_one_author(registry_with_base, adapter_dir):
    reg = registry_with_base
    reg.publish(adapter_dir, "acme/dates-lora", card=_card())
    reg.store.create_repo("other/json-lora")
    reg.store.upload_folder("other/json-lora", adapter_dir, commit_message="outside the facade")
    report = reg.sync(author="other", progress=False)
    assert report.repos_seen == 1 and report.repos_removed == 0
    assert reg.show("other/json-lora").repo_id == "other/json-lora"
    # A sync of one namespace never drops another's rows.
    assert reg.sync(author="nobody", progress=False).repos_removed == 0
    assert {r.repo_id for r in reg.search()} == {"acme/dates-lora", "other/json-lora"}


def test_set_alias_moves_and_remove_alias(registry_with_base, adapter_dir):
    reg = registry_with_base
    v1 = reg.publish(adapter_dir, "acme/dates-lora", card=_card(), aliases=["prod"])
    v2 = reg.update_card("acme/dates-lora", _card(tags=["v2"]))
    assert reg.set_alias("acme/dates-lora", "prod", "main") == v2.sha
    assert reg.resolve("acme/dates-lora@prod").sha == v2.sha
    assert reg.show("acme/dates-lora@prod").sha == v2.sha
    reg.remove_alias("acme/dates-lora", "prod")
    with pytest.raises(AliasNotFoundError, match="'prod'"):
        reg.resolve("acme/dates-lora@prod")
    assert reg.resolve(f"acme/dates-lora@{v1.sha}").sha == v1.sha


def test_republishing_the_same_folder_is_idempotent(registry_with_base, adapter_dir):
    reg = registry_with_base
    a = reg.publish(adapter_dir, "acme/dates-lora", card=_card())
    b = reg.publish(adapter_dir, "acme/dates-lora", card=_card())
    assert a.sha == b.sha
    assert len(reg.store.list_commits("acme/dates-lora")) == 2  # initial + one publish


def test_publish_reads_the_card_in_the_folder(registry_with_base, adapter_dir, tmp_path):
    import shutil

    folder = tmp_path / "with-card"
    shutil.copytree(adapter_dir, folder)
    # PEFT's own README names the base by local path: refused with a way out.
    with pytest.raises(CardError, match="build_adapter_card"):
        registry_with_base.publish(folder, "acme/x")
    _card("json").save(folder)
    published = registry_with_base.publish(folder, "acme/x")
    assert published.card.task == "json"


def test_publish_base_and_resolve_base(registry, tiny_base, tmp_path):
    pub = registry.publish_base(tiny_base, "acme/base", card=build_base_card(), aliases=["prod"])
    model = registry.resolve_base("acme/base")
    assert (model.repo_id, model.sha) == ("acme/base", pub.sha)
    assert (model.path / "config.json").is_file() and model.card.kind == "base"
    assert registry.resolve_base("acme/base@prod").sha == pub.sha
    local = registry.resolve_base(str(tiny_base))
    assert local.repo_id is None and local.path == tiny_base.resolve()
    with pytest.raises(BaseModelNotFoundError, match="'acme/missing'"):
        registry.resolve_base("acme/missing")
    with pytest.raises(BaseModelNotFoundError, match=str(tmp_path / "nowhere")):
        registry.resolve_base(str(tmp_path / "nowhere"))


def test_merged_models_are_published_as_merges(registry, tiny_base):
    card = build_adapter_card(base_model=BASE_ID, relation="merge", task="dates")
    registry.publish_base(tiny_base, "acme/dates-merged", card=card)
    (row,) = registry.search(kind="merge")
    assert row.repo_id == "acme/dates-merged" and row.base_model == BASE_ID
    with pytest.raises(Exception, match="not an adapter"):
        registry.resolve("acme/dates-merged")


def test_unknown_names(registry_with_base, adapter_dir):
    reg = registry_with_base
    reg.publish(adapter_dir, "acme/dates-lora", card=_card())
    with pytest.raises(AdapterNotFoundError, match="'acme/nope'"):
        reg.resolve("acme/nope")
    with pytest.raises(RevisionNotFoundError, match="'" + "0" * 40 + "'"):
        reg.resolve("acme/dates-lora@" + "0" * 40)
    with pytest.raises(AliasNotFoundError, match="'canary'"):
        reg.resolve("acme/dates-lora@canary")
    with pytest.raises(AdapterNotFoundError):
        reg.update_card("acme/nope", _card())


def test_only_top_level_non_pickle_files_travel(registry_with_base, adapter_dir, tmp_path):
    import shutil

    folder = tmp_path / "trainer-output"
    shutil.copytree(adapter_dir, folder)
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"pickle")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "tokenizer_config.json").write_text("{}")
    pub = registry_with_base.publish(folder, "acme/x", card=_card())
    files = {f.path for f in registry_with_base.store.repo_info("acme/x", revision=pub.sha).files}
    assert files == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer_config.json",
    }


def test_publish_when_the_base_is_not_in_the_store(registry, adapter_dir):
    card = build_adapter_card(base_model="HuggingFaceTB/SmolLM2-135M-Instruct", task="dates")
    pub = registry.publish(adapter_dir, "acme/for-smollm", card=card)
    (row,) = registry.search(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert row.sha == pub.sha and row.rank == 4


def test_a_remote_base_is_checked_only_once_cached(registry_with_base, adapter_dir):
    """Publishing never downloads a remote base's weights; a cached base is checked."""
    from loradock.errors import IncompatibleAdapterError

    class RemoteStore:
        name = "remote"

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, item):
            return getattr(self._inner, item)

    remote = Registry(RemoteStore(registry_with_base.store), settings=registry_with_base.settings)
    narrow = build_adapter_card(base_model=NARROW_BASE_ID)
    remote.publish(adapter_dir, "acme/unchecked", card=narrow)  # base not cached: not fetched
    assert remote.snapshots.root.joinpath(NARROW_BASE_ID).exists() is False
    remote.resolve_base(NARROW_BASE_ID)  # now cached (a server serving it would have it)
    with pytest.raises(IncompatibleAdapterError, match="hidden_size=32"):
        remote.publish(adapter_dir, "acme/checked", card=narrow)
