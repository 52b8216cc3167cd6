"""Durability of the local hub and the snapshot cache: a full disk, processes killed with
SIGKILL at a chosen point (a subprocess stopped there), and ``registry gc``. Each with its
outcome: nothing half-written is ever named, and the next write (or gc) cleans up."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from loradock.errors import StoreError
from loradock.registry.card import build_adapter_card, build_base_card
from loradock.registry.gc import collect_garbage
from tests.helpers.registry import BASE_ID, clone_adapter

ADAPTER = "acme/dates"


# -- the disk failing ---------------------------------------------------------------------


def test_disk_full_while_writing_a_blob_commits_nothing(
    registry, tiny_base, adapter_dir, monkeypatch
):
    from loradock.registry import local_files

    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    registry.resolve_base(BASE_ID)  # the publish checks read the base from the cache
    registry.store.create_repo(ADAPTER)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_files.os, "fsync", full)
    with pytest.raises(StoreError, match="No space left"):
        registry.publish(adapter_dir, ADAPTER, card=card)
    monkeypatch.setattr(local_files.os, "fsync", real_fsync)
    repo = registry.store.root / "models" / ADAPTER
    assert not list((repo / "objects").glob(".incoming-*"))
    assert len(registry.store.list_commits(ADAPTER)) == 1  # only the repo's initial commit
    published = registry.publish(adapter_dir, ADAPTER, card=card)
    assert registry.resolve(ADAPTER).sha == published.sha


# -- processes killed mid-write (SIGKILL at a chosen point) ---------------------------------

_HANG = textwrap.dedent(
    """
    import os, sys, time
    real_replace = os.replace

    def hang(src, dst, *a, **k):
        if str(dst).endswith(sys.argv[1]) or sys.argv[1] in str(dst):
            print("ready", flush=True)
            time.sleep(600)
        return real_replace(src, dst, *a, **k)

    os.replace = hang
    from loradock.registry.api import Registry
    from loradock.registry.card import build_adapter_card
    registry = Registry.open()
    if sys.argv[2] == "publish":
        card = build_adapter_card(base_model="acme/tiny-base", task="dates")
        registry.publish(sys.argv[3], "acme/dates", card=card)
    else:
        registry.sync(progress=False)
    """
)


def _run_until_ready_then_kill(args: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANG, *args], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # a subprocess importing torch, killed at a chosen point
def test_kill_during_publish_leaves_no_half_revision(registry, tiny_base, adapter_dir):
    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    # Killed with a blob written and fsynced, before it lands and before any commit names it.
    _run_until_ready_then_kill(["objects/", "publish", str(adapter_dir)])
    repo = registry.store.root / "models" / ADAPTER
    assert list((repo / "objects").glob(".incoming-*"))  # what the killed writer left
    assert len(registry.store.list_commits(ADAPTER)) == 1  # and no revision
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    published = registry.publish(adapter_dir, ADAPTER, card=card)  # the next write recovers
    assert not list((repo / "objects").glob(".incoming-*"))
    assert registry.resolve(ADAPTER).sha == published.sha


@pytest.mark.slow  # a subprocess importing torch, killed at a chosen point
@pytest.mark.parametrize("cleaned_by", ["gc", "the next fetch"])
def test_kill_during_sync_then_the_next_sync_recovers(registry, tiny_base, adapter_dir, cleaned_by):
    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    published = registry.publish(adapter_dir, ADAPTER, card=card)
    registry.index.remove_repo(ADAPTER)
    cache = registry.snapshots.root
    for path in cache.glob(f"{ADAPTER}/*"):  # the next sync must fetch it again
        if path.is_dir():
            shutil.rmtree(path)
    # Killed while moving a verified fetch into the snapshot cache.
    _run_until_ready_then_kill([published.sha, "sync"])
    assert list((cache / ADAPTER).glob(".*-*"))  # the staging folder it left
    if cleaned_by == "gc":
        report = collect_garbage(registry, keep=1)
        assert any(f".{published.sha[:12]}" in p for p in report.leftovers)
        assert not list((cache / ADAPTER).glob(".*-*"))
    assert registry.sync(progress=False).ok
    assert registry.index.latest_sha(ADAPTER) == published.sha
    assert not list((cache / ADAPTER).glob(".*-*"))
    assert registry.resolve(ADAPTER).sha == published.sha


# -- gc: leftovers and old snapshots -------------------------------------------------------


@pytest.mark.parametrize(
    ("keep", "dry_run", "kept"),
    [
        (1, False, {2, 0}),  # the newest, and v0 because `prod` names it
        (2, False, {2, 1, 0}),
        (1, True, {2, 1, 0}),  # a dry run lists and removes nothing
    ],
)
def test_gc_prunes_old_snapshots_and_leftovers(
    registry, tiny_base, adapter_dir, tmp_path, keep, dry_run, kept
):
    from typer.testing import CliRunner

    from loradock import cli

    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    card = build_adapter_card(base_model=BASE_ID, task="dates")
    shas = []
    for i in range(3):
        folder = clone_adapter(adapter_dir, tmp_path / f"v{i}", seed=i)
        shas.append(registry.publish(folder, ADAPTER, card=card).sha)
        registry.resolve(f"{ADAPTER}@{shas[-1]}")  # in the snapshot cache
    registry.set_alias(ADAPTER, "prod", shas[0])
    leftover = registry.store.root / "models" / ADAPTER / "objects" / ".incoming-killed"
    leftover.write_bytes(b"half a blob")
    args = ["registry", "gc", "--keep", str(keep), "--json", *(["--dry-run"] if dry_run else [])]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert str(leftover) in report["leftovers"] and leftover.exists() == dry_run
    pruned = {f"{ADAPTER}@{shas[i]}" for i in range(3) if i not in kept}
    if dry_run:
        pruned = {f"{ADAPTER}@{shas[1]}"}  # what keep=1 would remove
    assert set(report["pruned"]) == pruned
    on_disk = {i for i in range(3) if registry.snapshots.get(ADAPTER, shas[i]) is not None}
    assert on_disk == kept
