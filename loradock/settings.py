"""Where loradock keeps things, read from the environment once per call.

Everything defaults to folders under ``LORADOCK_HOME`` (``~/.cache/loradock``), so loradock
works offline with no token: the local hub folder is the embedded default store.

| variable            | meaning                                             | default                  |
|---------------------|-----------------------------------------------------|--------------------------|
| ``LORADOCK_HOME``   | root of everything below                            | ``~/.cache/loradock``    |
| ``LORADOCK_HUB``    | the local hub folder (repos with revisions)          | ``$LORADOCK_HOME/hub``   |
| ``LORADOCK_INDEX``  | the SQLite index file                               | ``$LORADOCK_HOME/index.sqlite`` |
| ``LORADOCK_CACHE``  | verified snapshots of resolved revisions            | ``$LORADOCK_HOME/snapshots`` |
| ``LORADOCK_STORE``  | ``local`` or ``hf`` (the Hugging Face Hub, or any    | ``local``                |
|                     | Hub-API server at ``HF_ENDPOINT``)                  |                          |
| ``HF_TOKEN``        | token for the ``hf`` store; never logged            | unset                    |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from loradock.errors import ConfigError

STORE_KINDS = ("local", "hf")


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Settings:
    """Resolved locations and the store choice; build with :func:`get_settings`."""

    home: Path
    hub_dir: Path
    index_path: Path
    cache_dir: Path
    store: str = "local"
    hf_endpoint: str | None = None
    token: str | None = field(default=None, repr=False)  # repr=False: tokens never reach logs

    def __post_init__(self) -> None:
        if self.store not in STORE_KINDS:
            raise ConfigError(
                "Invalid settings",
                [f"LORADOCK_STORE={self.store!r} is not one of {', '.join(STORE_KINDS)}"],
            )


def get_settings() -> Settings:
    """Read the environment now (tests change it between calls, so nothing is cached)."""
    home = _env_path("LORADOCK_HOME", Path("~/.cache/loradock").expanduser())
    return Settings(
        home=home,
        hub_dir=_env_path("LORADOCK_HUB", home / "hub"),
        index_path=_env_path("LORADOCK_INDEX", home / "index.sqlite"),
        cache_dir=_env_path("LORADOCK_CACHE", home / "snapshots"),
        store=os.environ.get("LORADOCK_STORE", "local"),
        hf_endpoint=os.environ.get("HF_ENDPOINT"),
        token=os.environ.get("HF_TOKEN"),
    )
