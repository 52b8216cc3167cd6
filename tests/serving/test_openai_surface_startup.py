"""The server checks every ``--adapter`` before it starts: a name that cannot be served stops
it with the reason, never a server that answers 404 to every request for it."""

from __future__ import annotations

import pytest

from loradock.errors import ConfigError
from loradock.serving.config import ServerConfig
from loradock.serving.server import build_app
from tests.helpers.serving import BASE_ID

ADAPTER = "acme/adapter-000"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (f"{ADAPTER}@missing-alias", "missing-alias"),
        ("acme/no-such-adapter", "acme/no-such-adapter"),
        ("acme/other-base-lora", "x=acme/other-base-lora"),  # made for another base
        (f"{ADAPTER}@prod", None),
    ],
)
def test_every_listed_adapter_is_checked_at_start(published, target, reason):
    config = ServerConfig(base=BASE_ID, adapters={"x": target}, engine_process=False)
    if reason is None:
        build_app(config, registry=published.registry)
        return
    with pytest.raises(ConfigError, match="--adapter") as info:
        build_app(config, registry=published.registry)
    assert reason in str(info.value)
