"""Where arena votes outlive the Space's disk: a dataset repo (on the Hub, or in loradock's
local hub), or a folder.

A Space's local disk is wiped on every rebuild, so each vote is also appended to a JSON
Lines file that a copy keeps elsewhere. On the Hub this is huggingface_hub's
``CommitScheduler`` pattern: votes are appended to a local file under the scheduler's
lock, and a background thread commits changed files to a dataset repo every few minutes
(and once more at exit). Next to loradock's local hub (``loradock space run``, the demo) the
same files are committed the same way to a dataset repo of the local hub (``LocalHubVoteLog``).
Each Space process writes its own file, named by a random id, so two replicas never
overwrite each other; a fresh Space reads every file back at start. A Space without loradock
can also write the files to a folder (a mounted volume, a synced directory).

Every vote carries its battle id, so reading the same vote twice is harmless. Only
``LocalHubVoteLog`` imports loradock (when it is opened), so the deployed Space starts from
``requirements.txt`` alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

VOTES_DIR = "votes"
DEFAULT_PUSH_MINUTES = 1.0
DEFAULT_LOCAL_DATASET = "local/arena-votes"

_log = logging.getLogger(__name__)


class VoteLog(Protocol):
    """A durable copy of the votes, read back when the local database starts empty."""

    def append(self, vote: dict[str, Any]) -> None: ...

    def read_all(self) -> list[dict[str, Any]]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def _file_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}.jsonl"


def _is_vote_file(name: str) -> bool:
    return name.startswith(f"{VOTES_DIR}/") and name.endswith(".jsonl")


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
            for name in sorted(n for n in names if _is_vote_file(n)):
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


class LocalHubVoteLog:
    """Votes committed to the dataset repo ``repo_id`` of loradock's local hub ``hub_dir``.

    As ``HubVoteLog`` does on the Hub: votes are appended to this process's file in a
    staging folder, a background thread commits it every ``every_minutes`` (an unchanged
    file makes no commit), and ``close`` commits once more. Each commit is the local hub's
    (blobs, then the commit, then the ref, each fsynced), so a reader sees whole files.
    """

    def __init__(
        self,
        hub_dir: str | Path,
        repo_id: str = DEFAULT_LOCAL_DATASET,
        *,
        every_minutes: float = DEFAULT_PUSH_MINUTES,
    ):
        try:  # only here: the Space deployed on its own never opens a local hub
            from loradock.registry.local_hub import LocalHub
        except ImportError:
            raise ValueError(
                "LORADOCK_ARENA_HUB needs loradock installed (it writes loradock's local hub); "
                "use LORADOCK_ARENA_DATASET (a Hub dataset repo) or LORADOCK_ARENA_VOTES_DIR."
            ) from None
        self.repo_id = repo_id
        self.hub = LocalHub(hub_dir)
        self.hub.create_repo(repo_id, private=True, repo_type="dataset")
        # This process's file, in a temporary folder made on the first vote (none: no folder).
        self._local: FolderVoteLog | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._push_every, args=(every_minutes * 60,), name="vote-log", daemon=True
        )
        self._thread.start()

    def append(self, vote: dict[str, Any]) -> None:
        with self._lock:  # a push never commits half a line
            if self._local is None:
                staging = Path(tempfile.mkdtemp(prefix="loradock-votes-"))
                self._local = FolderVoteLog(staging / VOTES_DIR)
            self._local.append(vote)

    def read_all(self) -> list[dict[str, Any]]:
        info = self.hub.repo_info(self.repo_id, repo_type="dataset")
        names = sorted(f.path for f in info.files if _is_vote_file(f.path))
        votes = []
        with tempfile.TemporaryDirectory(prefix="loradock-votes-read-") as tmp:
            folder = self.hub.snapshot_download(
                self.repo_id, revision=info.sha, local_dir=tmp, files=names, repo_type="dataset"
            )
            for name in names:
                votes += _parse_lines((folder / name).read_text(encoding="utf-8"))
        return votes

    def push_now(self) -> None:
        """Commit what is staged now (the thread does this every few minutes)."""
        with self._lock:
            if self._local is None:
                return  # no vote yet
            self.hub.upload_folder(
                self.repo_id,
                self._local.folder.parent,  # the staging folder: votes/<file>.jsonl
                commit_message="Add arena votes",
                repo_type="dataset",
            )

    def describe(self) -> str:
        return f"dataset repo {self.repo_id} of the local hub {self.hub.root}"

    def close(self) -> None:
        """Stop the thread, commit what is staged, and remove the staging folder."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join()
        self.push_now()
        if self._local is not None:
            shutil.rmtree(self._local.folder.parent, ignore_errors=True)

    def _push_every(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            try:
                self.push_now()
            except Exception as exc:  # the votes stay staged: the next push carries them
                _log.warning("Could not commit the arena votes to %s: %s", self.describe(), exc)


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


def open_vote_log(
    dataset: str | None = None, folder: str | Path | None = None, hub: str | Path | None = None
) -> VoteLog | None:
    """The configured copy; each argument left None is read from the environment.

    * ``folder`` (``LORADOCK_ARENA_VOTES_DIR``): JSON Lines files in that folder;
    * ``hub`` (``LORADOCK_ARENA_HUB``, a local hub folder): the dataset repo ``dataset``
      (``local/arena-votes`` when not given) of that local hub;
    * ``dataset`` (``LORADOCK_ARENA_DATASET``) alone: that dataset repo on the Hub;
    * none of them: ``local/arena-votes`` in loradock's local hub when the Space runs next
      to it (:func:`registry_hub_dir`), else None (votes stay in the local database only).
    """
    dataset = dataset or _env("LORADOCK_ARENA_DATASET")
    folder = folder or _env("LORADOCK_ARENA_VOTES_DIR")
    hub = hub or _env("LORADOCK_ARENA_HUB")
    if folder and (dataset or hub):
        raise ValueError(
            "Give either a dataset repo (LORADOCK_ARENA_DATASET, LORADOCK_ARENA_HUB) or "
            "LORADOCK_ARENA_VOTES_DIR (a folder) for the arena's votes, not both."
        )
    if folder:
        return FolderVoteLog(folder)
    if dataset and (dataset.count("/") != 1 or any(not part for part in dataset.split("/"))):
        raise ValueError(f"LORADOCK_ARENA_DATASET={dataset!r} is not of the form 'org/name'.")
    if dataset and not hub:
        return HubVoteLog(dataset, every_minutes=push_minutes())
    hub = hub or registry_hub_dir()
    if hub is None:
        return None
    return LocalHubVoteLog(hub, dataset or DEFAULT_LOCAL_DATASET, every_minutes=push_minutes())


def registry_hub_dir() -> Path | None:
    """loradock's local hub folder when the Space runs next to it: loradock is installed,
    its store is the local hub (``LORADOCK_STORE``, folder ``LORADOCK_HUB``), and this is no
    Hugging Face Space (there the local hub would sit on the disk every rebuild wipes)."""
    if os.environ.get("SPACE_ID"):
        return None
    try:
        from loradock.settings import get_settings
    except ImportError:  # the Space deployed on its own
        return None
    settings = get_settings()
    return settings.hub_dir if settings.store == "local" else None


def _env(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None
