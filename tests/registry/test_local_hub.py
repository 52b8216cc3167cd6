"""LocalHub: what only a folder store can promise (layout on disk, immutable blobs, corruption
found on download, concurrent publishers). The shared store contract runs for both stores in
test_store_contract.py."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from filelock import FileLock

from loradock.errors import AdapterNotFoundError, IntegrityError, InvalidNameError
from loradock.registry.card import build_adapter_card
from loradock.registry.local_hub import LocalHub
from loradock.registry.local_hub_repo import write_commit
from loradock.registry.store import Store
from tests.helpers.registry import carded_copy


@pytest.fixture
def hub(tmp_path) -> LocalHub:
    return LocalHub(tmp_path / "hub")


def test_implements_store_protocol(hub):
    assert isinstance(hub, Store)


def _publishable(tmp_path: Path, adapter_dir: Path, name: str = "a") -> Path:
    return carded_copy(tmp_path, adapter_dir, name, base="acme/b", task="dates")


def test_layout_on_disk(hub, tmp_path, adapter_dir):
    hub.create_repo("acme/x", private=True)
    commit = hub.upload_folder("acme/x", _publishable(tmp_path, adapter_dir), commit_message="m")
    hub.create_tag("acme/x", tag="prod", revision=commit.sha)
    repo = hub.root / "models" / "acme" / "x"
    assert (repo / "refs" / "heads" / "main").read_text() == commit.sha
    assert (repo / "refs" / "tags" / "prod").read_text() == commit.sha
    assert json.loads((repo / "repo.json").read_text())["private"] is True
    record = json.loads((repo / "commits" / f"{commit.sha}.json").read_text())
    assert record["message"] == "m" and record["parent"]
    for path, entry in record["files"].items():
        blob = repo / "objects" / entry["sha256"]
        assert blob.stat().st_size == entry["size"], path
        assert not os.access(blob, os.W_OK) or os.geteuid() == 0  # written read-only


def test_space_repos_live_apart(hub, tmp_path):
    folder = tmp_path / "space"
    folder.mkdir()
    (folder / "app.py").write_text("print('hi')\n")
    hub.create_repo("acme/demo", repo_type="space")
    hub.upload_folder("acme/demo", folder, commit_message="app", repo_type="space")
    assert (hub.root / "spaces" / "acme" / "demo" / "repo.json").is_file()
    assert list(hub.list_repos()) == []  # list_repos lists models, as list_models does
    with pytest.raises(AdapterNotFoundError):
        hub.repo_info("acme/demo")


def test_unchanged_files_are_stored_once(hub, tmp_path, adapter_dir):
    hub.create_repo("acme/x")
    folder = _publishable(tmp_path, adapter_dir)
    hub.upload_folder("acme/x", folder, commit_message="v1")
    objects = hub.root / "models" / "acme" / "x" / "objects"
    before = {p.name for p in objects.iterdir()}
    build_adapter_card(base_model="acme/b", task="json").save(folder)  # only the card changes
    hub.upload_folder("acme/x", folder, commit_message="v2")
    added = {p.name for p in objects.iterdir()} - before
    assert len(added) == 1


def test_corrupt_blob_is_caught_on_download(hub, tmp_path, adapter_dir):
    hub.create_repo("acme/x")
    commit = hub.upload_folder("acme/x", _publishable(tmp_path, adapter_dir), commit_message="m")
    info = hub.repo_info("acme/x")
    weights = next(f for f in info.files if f.path == "adapter_model.safetensors")
    blob = hub.root / "models" / "acme" / "x" / "objects" / weights.sha256
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="adapter_model.safetensors"):
        hub.snapshot_download("acme/x", revision=commit.sha, local_dir=tmp_path / "dl")
    assert not (tmp_path / "dl" / "adapter_model.safetensors").exists()


def test_tampered_commit_is_caught(hub, tmp_path, adapter_dir):
    hub.create_repo("acme/x")
    commit = hub.upload_folder("acme/x", _publishable(tmp_path, adapter_dir), commit_message="m")
    path = hub.root / "models" / "acme" / "x" / "commits" / f"{commit.sha}.json"
    path.write_text(path.read_text().replace('"m"', '"changed"'))
    with pytest.raises(IntegrityError, match=commit.sha):
        hub.repo_info("acme/x")


@pytest.mark.parametrize(
    "bad_path", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "a\\b.txt", "./x", "a//b"]
)
def test_commit_paths_cannot_escape(hub, tmp_path, bad_path):
    """A commit file naming a path outside the snapshot is refused before anything is written."""
    hub.create_repo("acme/x")
    repo = hub.root / "models" / "acme" / "x"
    sha = write_commit(
        repo,
        None,
        "evil",
        {bad_path: {"sha256": "0" * 64, "size": 1}},
        "2026-01-01T00:00:00+00:00",
    )
    (repo / "refs" / "heads" / "main").write_text(sha)
    with pytest.raises(InvalidNameError, match=re.escape(repr(bad_path))):
        hub.snapshot_download("acme/x", revision=sha, local_dir=tmp_path / "dl")
    assert not (tmp_path / "evil.txt").exists()


def test_file_names_with_backslashes_are_refused(hub, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a\\b.txt").write_text("x")
    hub.create_repo("acme/x")
    with pytest.raises(InvalidNameError, match=re.escape(repr("a\\b.txt"))):
        hub.upload_folder("acme/x", folder, commit_message="m")
    assert len(hub.list_commits("acme/x")) == 1  # only the initial commit


def test_concurrent_publishers_lose_nothing(hub, tmp_path, adapter_dir):
    """Eight threads commit at once: every commit lands in one linear history."""
    hub.create_repo("acme/busy")
    folders = []
    for i in range(8):
        folder = _publishable(tmp_path, adapter_dir, f"f{i}")
        (folder / "note.txt").write_text(f"publisher {i}\n")
        folders.append(folder)
    errors: list[BaseException] = []
    shas: list[str] = []

    def publish(folder: Path, i: int) -> None:
        try:
            shas.append(hub.upload_folder("acme/busy", folder, commit_message=f"p{i}").sha)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(f, i)) for i, f in enumerate(folders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    history = [c.sha for c in hub.list_commits("acme/busy")]
    assert len(history) == 9 and set(shas) <= set(history)
    notes = set()
    for sha in shas:
        out = hub.snapshot_download("acme/busy", revision=sha, local_dir=tmp_path / "dl" / sha)
        notes.add((out / "note.txt").read_text())
    assert len(notes) == 8


def _leftover(hub: LocalHub, kind: str) -> tuple[Path, Path]:
    """A file a killed writer of ``kind`` left, and the folder whose lock its writer holds."""
    hub.create_repo("acme/x")
    hub.create_repo("acme/x", repo_type="dataset")
    sha = hub.repo_info("acme/x").sha
    model, dataset = hub.root / "models" / "acme" / "x", hub.root / "datasets" / "acme" / "x"
    snapshots = hub.root / ".snapshots"
    where = {
        "blob": (model, "objects/.incoming-k1"),
        "ref": (model, "refs/heads/.main.k1"),
        "commit": (model, "commits/.abc.json.k1"),
        "dataset blob": (dataset, "objects/.incoming-k1"),
        "snapshot copy": (snapshots / "models" / "acme" / "x" / sha, ".partial-k1"),
        "nested dataset copy": (snapshots / "datasets" / "acme" / "x" / sha, "votes/.partial-k1"),
    }
    folder, rel = where[kind]
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    (folder / rel).write_bytes(b"half")
    return folder / rel, folder


LEFTOVERS = ["blob", "ref", "commit", "dataset blob", "snapshot copy", "nested dataset copy"]


@pytest.mark.parametrize("live", [False, True], ids=["killed", "live"])
@pytest.mark.parametrize("kind", LEFTOVERS)
def test_gc_removes_what_killed_writers_left_and_never_a_live_one(hub, kind, live):
    leftover, folder = _leftover(hub, kind)
    holder = FileLock(str(folder) + ".lock")  # what a live writer holds while it writes
    if live:
        holder.acquire()
    try:
        assert hub.clean_leftovers(dry_run=True) == ([] if live else [leftover])
        assert leftover.exists()
        assert hub.clean_leftovers() == ([] if live else [leftover])
    finally:
        holder.release()
    assert leftover.exists() is live


def test_the_next_download_removes_a_killed_downloads_copies(hub, tmp_path, adapter_dir):
    hub.create_repo("acme/x")
    sha = hub.upload_folder("acme/x", _publishable(tmp_path, adapter_dir), commit_message="m").sha
    left = hub.root / ".snapshots" / "models" / "acme" / "x" / sha / ".partial-killed"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"half")
    out = hub.snapshot_download("acme/x", revision=sha)
    assert not left.exists() and (out / "adapter_config.json").is_file()
