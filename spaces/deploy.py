"""Upload the Space folder as a Hugging Face Space repo through the registry's store.

Not part of the deployed Space (it imports loradock): only the files in ``SPACE_FILES``
are uploaded, staged into a clean folder so caches and this module stay behind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from loradock.errors import ProblemsError
from loradock.registry.names import validate_repo_id
from loradock.registry.store import CommitInfo, Store

SPACE_DIR = Path(__file__).resolve().parent
SPACE_FILES = (
    "README.md",
    "requirements.txt",
    "app.py",
    "layout.py",
    "client.py",
    "records.py",
    "endpoints.py",
    "markup.py",
    "notices.py",
    "arena.py",
    "arena_tab.py",
    "ratings.py",
    "vote_log.py",
    "browse.py",
    "browse_tab.py",
    "compare_view.py",
    "streams.py",
    "tables.py",
    "examples.json",
)


def stage_space(dest: str | Path, *, source: str | Path = SPACE_DIR) -> Path:
    """Copy the Space's files into ``dest``; every missing file is reported at once."""
    source, dest = Path(source), Path(dest)
    missing = [name for name in SPACE_FILES if not (source / name).is_file()]
    if missing:
        raise ProblemsError(
            f"The Space folder {str(source)!r} is incomplete; reinstall loradock", missing
        )
    dest.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(source / name, dest / name)
    return dest


def deploy_space(
    repo_id: str,
    *,
    store: Store | None = None,
    private: bool = False,
    commit_message: str = "Deploy the loradock Space",
) -> CommitInfo:
    """Create (if needed) the Space repo ``repo_id`` and upload the Space's files as one commit."""
    validate_repo_id(repo_id)
    if store is None:
        from loradock.registry.api import Registry

        store = Registry.open().store
    store.create_repo(repo_id, private=private, exist_ok=True, repo_type="space")
    with tempfile.TemporaryDirectory(prefix="loradock-space-") as tmp:
        folder = stage_space(Path(tmp) / "space")
        return store.upload_folder(
            repo_id, folder, commit_message=commit_message, repo_type="space"
        )
