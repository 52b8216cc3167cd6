"""Behaviour every ``Store`` must show (LocalHub and HfHub alike).

Plain functions taking a ``store``, a scratch folder and a good adapter folder;
``test_store_contract.py`` runs every one of ``ALL_CHECKS`` against LocalHub and against HfHub
(real huggingface_hub HTTP to tests/hubserver). Each uses repo ids of its own, so the
functions can share one store.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from loradock.errors import (
    AdapterNotFoundError,
    InvalidNameError,
    LoradockError,
    RevisionNotFoundError,
)
from loradock.registry.store import Store
from tests.helpers.registry import carded_copy


def _suffix(tmp_path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", tmp_path.name).strip("-")[-40:].strip("-")


def unique_repo(tmp_path: Path, stem: str, org: str = "contract") -> str:
    """A repo id no other test uses (derived from pytest's per-test folder name)."""
    return f"{org}/{stem}-{_suffix(tmp_path)}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_commit_and_history(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    repo = unique_repo(tmp_path, "history")
    store.create_repo(repo)
    first = store.upload_folder(
        repo,
        carded_copy(tmp_path, adapter_dir, "v1", task="dates", base="acme/b"),
        commit_message="v1",
    )
    assert re.fullmatch(r"[0-9a-f]{40}", first.sha)
    assert first.repo_id == repo and first.message == "v1"
    second = store.upload_folder(
        repo,
        carded_copy(tmp_path, adapter_dir, "v2", task="json", base="acme/b"),
        commit_message="v2",
    )
    assert second.sha != first.sha

    history = store.list_commits(repo)
    shas = [c.sha for c in history]
    assert shas[:2] == [second.sha, first.sha]  # newest first
    assert [c.message for c in history[:2]] == ["v2", "v1"]
    assert store.list_refs(repo).branches["main"] == second.sha
    assert [c.sha for c in store.list_commits(repo, revision=first.sha)][0] == first.sha

    # Old revisions stay readable and unchanged.
    head, old = store.repo_info(repo), store.repo_info(repo, revision=first.sha)
    assert head.sha == second.sha and old.sha == first.sha
    assert "task:json" in head.tags and "task:dates" in old.tags
    assert head.card_data["base_model"] == "acme/b"
    assert {f.path for f in old.files} >= {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    weights = next(f for f in old.files if f.path == "adapter_model.safetensors")
    assert weights.size == (adapter_dir / "adapter_model.safetensors").stat().st_size


def check_upload_skips_unchanged(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    repo = unique_repo(tmp_path, "same")
    store.create_repo(repo)
    folder = carded_copy(tmp_path, adapter_dir, "v1", task="dates", base="acme/b")
    first = store.upload_folder(repo, folder, commit_message="v1")
    again = store.upload_folder(repo, folder, commit_message="same files again")
    assert again.sha == first.sha
    assert len(store.list_commits(repo)) == len(store.list_commits(repo, revision=first.sha))


def check_snapshot_pinned(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    repo = unique_repo(tmp_path, "snap")
    store.create_repo(repo)
    v1 = carded_copy(tmp_path, adapter_dir, "v1", task="dates", base="acme/b")
    first = store.upload_folder(repo, v1, commit_message="v1")
    v2 = carded_copy(tmp_path, adapter_dir, "v2", task="json", base="acme/b")
    store.upload_folder(repo, v2, commit_message="v2")

    out = store.snapshot_download(repo, revision=first.sha, local_dir=tmp_path / "dl")
    assert Path(out) == tmp_path / "dl"
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors"):
        assert _sha256(Path(out) / name) == _sha256(v1 / name), name


def check_tags(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    repo = unique_repo(tmp_path, "tags")
    store.create_repo(repo)
    first = store.upload_folder(
        repo, carded_copy(tmp_path, adapter_dir, "v1", task="a", base="acme/b"), commit_message="v1"
    )
    second = store.upload_folder(
        repo, carded_copy(tmp_path, adapter_dir, "v2", task="b", base="acme/b"), commit_message="v2"
    )
    store.create_tag(repo, tag="prod", revision=first.sha)
    store.create_tag(repo, tag="staging", revision="main")
    refs = store.list_refs(repo)
    assert refs.tags == {"prod": first.sha, "staging": second.sha}
    assert store.repo_info(repo, revision="prod").sha == first.sha

    with pytest.raises(LoradockError):  # a tag moves only by delete + create
        store.create_tag(repo, tag="prod", revision=second.sha)
    store.delete_tag(repo, tag="prod")
    store.create_tag(repo, tag="prod", revision=second.sha)
    assert store.list_refs(repo).tags["prod"] == second.sha

    with pytest.raises(RevisionNotFoundError):
        store.delete_tag(repo, tag="never-set")
    with pytest.raises(RevisionNotFoundError):
        store.create_tag(repo, tag="canary", revision="f" * 40)

    # move_tag creates or moves (in one replace on the local store), same target is a no-op.
    for tag, target in (("prod", first.sha), ("prod", first.sha), ("new", second.sha)):
        store.move_tag(repo, tag=tag, revision=target)
        assert store.list_refs(repo).tags[tag] == target


def check_list_repos_filters(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    org = f"lr-{_suffix(tmp_path)}"
    repos = {
        f"{org}/dates-on-b": ("dates", "acme/b"),
        f"{org}/json-on-b": ("json", "acme/b"),
        f"{org}/dates-on-c": ("dates", "acme/c"),
    }
    for repo, (task, base) in repos.items():
        store.create_repo(repo)
        folder = carded_copy(tmp_path, adapter_dir, repo.split("/")[1], task=task, base=base)
        store.upload_folder(repo, folder, commit_message="add")

    def ids(**kw) -> set[str]:
        return {r.repo_id for r in store.list_repos(**kw)}

    assert ids(author=org) == set(repos)
    assert ids(author=org, filter=["task:dates"]) == {f"{org}/dates-on-b", f"{org}/dates-on-c"}
    assert ids(author=org, filter=["task:dates", "base_model:adapter:acme/b"]) == {
        f"{org}/dates-on-b"
    }
    assert ids(author=org, filter=["lora", "peft"]) == set(repos)
    assert ids(author=org, search="json") == {f"{org}/json-on-b"}
    assert ids(author=org, search="nothing-matches-this") == set()
    assert len(list(store.list_repos(author=org, limit=2))) == 2
    info = next(iter(store.list_repos(author=org, search="json-on-b")))
    assert info.card_data["base_model"] == "acme/b"
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha)


def check_private_flag(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    repo = unique_repo(tmp_path, "private")
    store.create_repo(repo, private=True)
    store.upload_folder(
        repo, carded_copy(tmp_path, adapter_dir, "v1", task="a", base="acme/b"), commit_message="v1"
    )
    assert store.repo_info(repo).private is True
    public = unique_repo(tmp_path, "public")
    store.create_repo(public)
    assert store.repo_info(public).private is False
    store.create_repo(repo, exist_ok=True)  # idempotent
    with pytest.raises(LoradockError):
        store.create_repo(repo, exist_ok=False)


def check_errors(store: Store, tmp_path: Path, adapter_dir: Path) -> None:
    missing = unique_repo(tmp_path, "missing")
    with pytest.raises(AdapterNotFoundError, match=re.escape(missing)):
        store.repo_info(missing)
    with pytest.raises(AdapterNotFoundError):
        store.list_refs(missing)
    repo = unique_repo(tmp_path, "errs")
    store.create_repo(repo)
    with pytest.raises(RevisionNotFoundError):
        store.repo_info(repo, revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        store.repo_info(repo, revision="no-such-tag")
    for bad in ("../x", "a/../../b", "/abs/path", "a\\b/c"):
        with pytest.raises(InvalidNameError, match=re.escape(repr(bad))):
            store.repo_info(bad)


ALL_CHECKS = (
    check_commit_and_history,
    check_upload_skips_unchanged,
    check_snapshot_pinned,
    check_tags,
    check_list_repos_filters,
    check_private_flag,
    check_errors,
)
