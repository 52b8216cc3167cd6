"""The rules behind the endpoint's security table (tests/serving/test_security.py), checked
without a server: which registry names a request may use, options refused at start, and
server folders kept out of messages."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loradock.errors import AdapterNotFoundError, ConfigError, LoradockError
from loradock.serving.config import ServerConfig
from loradock.serving.http.errors import Redactor
from loradock.serving.resolver import AdapterResolver
from tests.helpers.serving import BASE_ID


@pytest.mark.parametrize(
    ("scope", "name", "fragment"),
    [
        ("indexed", "acme/adapter-002", None),
        ("indexed", "acme/other-base-lora", "not served here"),  # indexed for another base
        ("indexed", "evil/x", "not served here"),  # decided from the index: no fetch
        ("listed", "acme/adapter-002", "only the names it was started with"),
        ("listed", "acme/adapter-001", None),  # the repo of a --adapter name
        ("any", "acme/other-base-lora", "cannot be served"),  # fetched, then checked
        ("any", "evil/x", "evil/x"),  # the registry's own "not found"
    ],
)
def test_which_registry_names_a_request_may_use(published, scope, name, fragment):
    resolver = _resolver(published, scope)
    if fragment is None:
        assert resolver.resolve(name).repo_id == name
    else:
        with pytest.raises(LoradockError, match=fragment):
            resolver.resolve(name)


def test_an_adapter_the_admin_loads_is_served_afterwards(published):
    resolver = _resolver(published, "listed")
    repo = "acme/adapter-003"
    with pytest.raises(AdapterNotFoundError):
        resolver.resolve(repo)
    assert resolver.resolve(repo, admin=True).repo_id == repo
    pinned = f"{repo}@{published.shas[repo]}"  # another name of the repo: not a cache hit
    assert resolver.resolve(pinned).sha == published.shas[repo]


def _resolver(published, scope: str) -> AdapterResolver:
    return AdapterResolver(
        published.registry,
        base_name=BASE_ID,
        base=published.base,
        served={"dates": "acme/adapter-001@prod"},
        scope=scope,
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"api_key": "sk-short"}, "api_key must be a string of at least 16 characters"),
        ({"admin_key": "a" * 15}, "admin_key must be a string of at least 16 characters"),
        ({"api_key": "k" * 20 + "\n"}, "without surrounding spaces"),
        ({"adapters": {"d": "acme/x\n"}}, "expected a registry name"),
        ({"served_base_name": "acme/b\n"}, "served base name"),
    ],
)
def test_unsafe_options_are_refused_at_start(options, fragment):
    with pytest.raises(ConfigError, match="Invalid server options") as info:
        ServerConfig.from_options(base="tiny/base", **options)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("cannot read /srv/lh/snapshots/acme/x/abc/adapter_config.json", "cannot read <server path>/snapshots/acme/x/abc/adapter_config.json"),
        ("index /srv/lh/index.sqlite is locked", "index <server path> is locked"),
        ("base folder /models/base: bad config", "base folder <server path>: bad config"),
        ("acme/x@abc is not an adapter", "acme/x@abc is not an adapter"),
    ],
)  # fmt: skip
def test_messages_never_show_server_folders(message, expected):
    redact = Redactor(["/srv/lh", "/srv/lh/index.sqlite", "/models/base", "/"])
    assert redact(message) == expected


@pytest.mark.parametrize(
    ("docs", "path", "key", "status"),
    [
        (False, "/openapi.json", None, 401),  # off: an unknown path, behind the key
        (False, "/openapi.json", "sk-test-api-0123456789", 404),
        (False, "/docs", "sk-test-api-0123456789", 404),
        (True, "/openapi.json", None, 200),  # --docs: served, without a key
        (True, "/docs", None, 200),
        (True, "/redoc", None, 200),
        (True, "/v1/models", None, 401),  # the API itself keeps its key
    ],
)
def test_docs_only_with_the_option(docs, path, key, status):
    from fastapi.testclient import TestClient

    from loradock.serving.http.app import create_app

    config = ServerConfig.from_options(
        base=BASE_ID, api_key="sk-test-api-0123456789", docs=docs, port=0
    )
    caps = SimpleNamespace(max_lora_rank=None, merged=False, max_model_len=64)
    app = create_app(SimpleNamespace(capabilities=caps), registry=None, config=config, base="b")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    assert TestClient(app).get(path, headers=headers).status_code == status  # no lifespan
