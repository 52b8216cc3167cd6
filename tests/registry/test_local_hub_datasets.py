"""LocalHub dataset repos: committed and read back like model repos, and kept apart from them
so that a dataset is never listed, indexed, resolved or served as a model."""

from __future__ import annotations

import pytest

from loradock.errors import AdapterNotFoundError, InvalidNameError
from loradock.registry.local_hub import LocalHub
from tests.helpers.folders import text_folder


@pytest.fixture
def hub_with_dataset(tmp_path) -> tuple[LocalHub, list[str]]:
    """``acme/votes`` as a dataset with two commits (the second adds a file, changes one)."""
    hub = LocalHub(tmp_path / "hub")
    hub.create_repo("acme/votes", repo_type="dataset", private=True)
    shas = []
    for n, files in enumerate(
        [{"votes/a.jsonl": "1\n"}, {"votes/a.jsonl": "1\n2\n", "votes/b.jsonl": "3\n"}]
    ):
        folder = text_folder(tmp_path, f"v{n}", files)
        shas.append(
            hub.upload_folder("acme/votes", folder, commit_message=f"v{n}", repo_type="dataset").sha
        )
    return hub, shas


@pytest.mark.parametrize(
    ("revision", "expected"),
    [
        (0, {"votes/a.jsonl": "1\n"}),
        (1, {"votes/a.jsonl": "1\n2\n", "votes/b.jsonl": "3\n"}),
        ("main", {"votes/a.jsonl": "1\n2\n", "votes/b.jsonl": "3\n"}),
    ],
)
def test_a_dataset_reads_back_at_each_revision(hub_with_dataset, tmp_path, revision, expected):
    hub, shas = hub_with_dataset
    rev = shas[revision] if isinstance(revision, int) else revision
    info = hub.repo_info("acme/votes", revision=rev, repo_type="dataset")
    assert info.repo_type == "dataset" and info.private
    assert {f.path for f in info.files} == set(expected)
    out = hub.snapshot_download("acme/votes", revision=rev, repo_type="dataset")
    assert {p: (out / p).read_text() for p in expected} == expected
    assert out == hub.root / ".snapshots" / "datasets" / "acme" / "votes" / info.sha
    assert (hub.root / "datasets" / "acme" / "votes" / "repo.json").is_file()
    assert [c.message for c in hub.list_commits("acme/votes", repo_type="dataset")] == [
        "v1",
        "v0",
        "initial commit",
    ]


def test_an_unchanged_dataset_upload_makes_no_commit(hub_with_dataset, tmp_path):
    hub, shas = hub_with_dataset
    folder = text_folder(tmp_path, "same", {"votes/a.jsonl": "1\n2\n", "votes/b.jsonl": "3\n"})
    again = hub.upload_folder("acme/votes", folder, commit_message="again", repo_type="dataset")
    assert again.sha == shas[1]


@pytest.mark.parametrize(
    "call",
    [
        lambda hub: hub.repo_info("acme/votes"),
        lambda hub: hub.snapshot_download("acme/votes", revision="main"),
        lambda hub: hub.list_refs("acme/votes"),
        lambda hub: hub.list_commits("acme/votes"),
        lambda hub: hub.create_tag("acme/votes", tag="prod", revision="main"),
        lambda hub: hub.repo_info("acme/votes", repo_type="space"),
    ],
    ids=["repo_info", "snapshot_download", "list_refs", "list_commits", "create_tag", "space"],
)
def test_a_dataset_is_no_model(hub_with_dataset, call):
    hub, _ = hub_with_dataset
    with pytest.raises(AdapterNotFoundError, match="'acme/votes' not found"):
        call(hub)
    assert list(hub.list_repos()) == []


def test_the_registry_never_resolves_or_indexes_a_dataset(registry, tmp_path):
    registry.store.create_repo("acme/votes", repo_type="dataset")
    folder = text_folder(tmp_path, "v", {"adapter_config.json": "{}", "README.md": "---\n---\n"})
    registry.store.upload_folder("acme/votes", folder, commit_message="m", repo_type="dataset")
    assert registry.sync(progress=False).repos_seen == 0
    with pytest.raises(AdapterNotFoundError):
        registry.resolve("acme/votes")


def test_a_model_and_a_dataset_of_one_name_are_two_repos(hub_with_dataset, tmp_path):
    hub, shas = hub_with_dataset
    hub.create_repo("acme/votes")
    model = hub.upload_folder(
        "acme/votes", text_folder(tmp_path, "m", {"config.json": "{}"}), commit_message="model"
    )
    assert [f.path for f in hub.repo_info("acme/votes").files] == ["config.json"]
    assert hub.repo_info("acme/votes", repo_type="dataset").sha == shas[1] != model.sha


def test_an_unknown_repo_type_is_refused(tmp_path):
    with pytest.raises(InvalidNameError, match="repo_type 'bucket'"):
        LocalHub(tmp_path / "hub").create_repo("acme/x", repo_type="bucket")  # type: ignore[arg-type]
