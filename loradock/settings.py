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
| ``LORADOCK_MAX_ADAPTER_BYTES`` | the most an adapter's files may weigh for | ``2147483648`` (2 GiB) |
|                     | ``resolve`` to download them (checked from the      |                          |
|                     | store's file list, before any download)             |                          |
| ``LORADOCK_ALLOW_PRIVATE`` | ``1``: ``resolve`` also serves private repos  | ``0``                    |
|                     | (the token can read them; any API user could name   |                          |
|                     | them)                                               |                          |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from loradock.errors import ConfigError

STORE_KINDS = ("local", "hf")
DEFAULT_MAX_ADAPTER_BYTES = 2 * 1024**3
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


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
    max_adapter_bytes: int = DEFAULT_MAX_ADAPTER_BYTES
    allow_private: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.store not in STORE_KINDS:
            problems.append(f"LORADOCK_STORE={self.store!r} is not one of {', '.join(STORE_KINDS)}")
        size = self.max_adapter_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            problems.append(f"LORADOCK_MAX_ADAPTER_BYTES={size!r} must be a positive integer")
        if not isinstance(self.allow_private, bool):
            problems.append(f"LORADOCK_ALLOW_PRIVATE={self.allow_private!r} must be 0 or 1")
        if problems:
            raise ConfigError("Invalid settings", problems)


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
        max_adapter_bytes=_env_int("LORADOCK_MAX_ADAPTER_BYTES", DEFAULT_MAX_ADAPTER_BYTES),
        allow_private=_env_flag("LORADOCK_ALLOW_PRIVATE"),
    )


def _env_int(name: str, default: int) -> int | str:
    """The variable as an integer; a value that is not one is passed on for Settings to
    refuse with the variable's name."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        return value


def _env_flag(name: str) -> bool | str:
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    return os.environ[name]
