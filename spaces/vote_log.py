"""Where arena votes outlive the Space's disk: a dataset repo on the Hub, or a folder.

A Space's local disk is wiped on every rebuild, so each vote is also appended to a JSON
Lines file that a copy keeps elsewhere. On the Hub this is huggingface_hub's
``CommitScheduler`` pattern: votes are appended to a local file under the scheduler's
lock, and a background thread commits changed files to a dataset repo every few minutes
(and once more at exit). Each Space process writes its own file, named by a random id, so
two replicas never overwrite each other; a fresh Space reads every file back at start.
Offline, the same files go to a folder (a mounted volume, a synced directory).

Every vote carries its battle id, so reading the same vote twice is harmless.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

VOTES_DIR = "votes"
DEFAULT_PUSH_MINUTES = 1.0


class VoteLog(Protocol):
    """A durable copy of the votes, read back when the local database starts empty."""

    def append(self, vote: dict[str, Any]) -> None: ...

    def read_all(self) -> list[dict[str, Any]]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def _file_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}.jsonl"


def _parse_lines(text: str) -> list[dict[str, Any]]:
    """The votes of one file; a line cut short by a crash is skipped, not fatal."""
    votes = []
    for line in text.splitlines():
        try:
            vote = json.loads(line)
        except ValueError:
            continue
        if isinstance(vote, dict):
            votes.append(vote)
    return votes


class FolderVoteLog:
    """Votes as JSON Lines files in ``folder`` (this process appends to one file)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._path = self.folder / _file_name()
        self._lock = threading.Lock()

    def append(self, vote: dict[str, Any]) -> None:
        with self._lock, self._path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(vote, sort_keys=True) + "\n")

    def read_all(self) -> list[dict[str, Any]]:
        votes = []
        for path in sorted(self.folder.glob("*.jsonl")):
            votes += _parse_lines(path.read_text(encoding="utf-8"))
        return votes

    def describe(self) -> str:
        return f"folder {self.folder}"

    def close(self) -> None:
        """Nothing to do: every vote is on disk when ``append`` returns."""


class HubVoteLog:
    """Votes committed to the dataset repo ``repo_id`` by a ``CommitScheduler``.

    ``endpoint`` is the Hub to talk to (``HF_ENDPOINT`` when None: the Hub itself, or a
    private one); ``token`` needs write access to the repo (``HF_TOKEN`` when None).
    """

    def __init__(
        self,
        repo_id: str,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        every_minutes: float = DEFAULT_PUSH_MINUTES,
        staging: str | Path | None = None,
    ):
        from huggingface_hub import CommitScheduler, HfApi

        self.repo_id = repo_id
        self.api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
        folder = Path(staging or tempfile.mkdtemp(prefix="loradock-votes-"))
        self._local = FolderVoteLog(folder)
        self.scheduler = CommitScheduler(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            path_in_repo=VOTES_DIR,
            allow_patterns="*.jsonl",
            every=every_minutes,
            private=True,
            hf_api=self.api,
        )

    def append(self, vote: dict[str, Any]) -> None:
        with self.scheduler.lock:  # the scheduler never uploads half a line
            self._local.append(vote)

    def read_all(self) -> list[dict[str, Any]]:
        from huggingface_hub import hf_hub_download

        names = self.api.list_repo_files(self.repo_id, repo_type="dataset")
        votes = []
        with tempfile.TemporaryDirectory(prefix="loradock-votes-read-") as tmp:
            for name in sorted(n for n in names if n.startswith(f"{VOTES_DIR}/")):
                if not name.endswith(".jsonl"):
                    continue
                path = hf_hub_download(
                    self.repo_id,
                    name,
                    repo_type="dataset",
                    endpoint=self.api.endpoint,
                    token=self.api.token,
                    local_dir=tmp,
                )
                votes += _parse_lines(Path(path).read_text(encoding="utf-8"))
        return votes

    def push_now(self) -> None:
        """Commit what is staged now (the scheduler does this on its own every few minutes)."""
        self.scheduler.trigger().result()

    def describe(self) -> str:
        return f"dataset repo {self.repo_id}"

    def close(self) -> None:
        """Commit what is staged, then stop the scheduler's thread.

        Stopped here rather than left to the interpreter's exit, where the scheduler's
        thread can wake after huggingface_hub's thread pool has shut down.
        """
        self.push_now()
        self.scheduler.stop()


def push_minutes(value: str | float | None = None) -> float:
    """``value``, else ``LORADOCK_ARENA_PUSH_MINUTES``, else 1; must be a positive number."""
    if value is None:
        value = os.environ.get("LORADOCK_ARENA_PUSH_MINUTES", "").strip() or DEFAULT_PUSH_MINUTES
    try:
        minutes = float(value)
    except ValueError:
        minutes = 0.0
    if not minutes > 0:
        raise ValueError(
            f"LORADOCK_ARENA_PUSH_MINUTES={value!r} is not a positive number of minutes "
            f"(default {DEFAULT_PUSH_MINUTES:g})."
        )
    return minutes


def open_vote_log(dataset: str | None = None, folder: str | Path | None = None) -> VoteLog | None:
    """The configured copy: ``dataset`` (``LORADOCK_ARENA_DATASET``), else ``folder``
    (``LORADOCK_ARENA_VOTES_DIR``), else None (votes stay in the local database only)."""
    dataset = dataset or os.environ.get("LORADOCK_ARENA_DATASET", "").strip() or None
    folder = folder or os.environ.get("LORADOCK_ARENA_VOTES_DIR", "").strip() or None
    if dataset and folder:
        raise ValueError(
            "Give either LORADOCK_ARENA_DATASET (a Hub dataset repo) or "
            "LORADOCK_ARENA_VOTES_DIR (a folder) for the arena's votes, not both."
        )
    if dataset:
        if dataset.count("/") != 1 or any(not part for part in dataset.split("/")):
            raise ValueError(f"LORADOCK_ARENA_DATASET={dataset!r} is not of the form 'org/name'.")
        return HubVoteLog(dataset, every_minutes=push_minutes())
    return FolderVoteLog(folder) if folder else None
