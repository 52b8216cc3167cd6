"""Hostile input against the Space, each with its refusal: the key, the arena, the page.

The key cases run against a real capture server on 127.0.0.1 (capture_server.py) while
the Space's configured endpoint is a stand-in that requires the Space's key: the secret
must never arrive there, and the configured endpoint must keep working meanwhile.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from capture_server import FAKE_ADAPTER, capture_server
from rendered import rendered_html
from space_standin import BASE

from loradock.spaces.app import SpaceApp
from loradock.spaces.arena import session_vote_limit
from loradock.spaces.browse import lineage_markdown
from loradock.spaces.client import AdapterCardView, AdapterRow, EndpointError
from loradock.spaces.endpoints import EndpointPolicy, canonical_endpoint
from loradock.spaces.markup import md_code, md_text

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a page

SECRET = "sekret"  # the keyed stand-in's key, and the Space's own
HOME = "http://home.example:8000"
OTHER = "http://other.example:9000"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("  HTTP://Home.Example:8000/v1/ ", "http://home.example:8000"),
        ("https://home.example", "https://home.example:443"),
        ("http://home.example/api/v1", "http://home.example:80/api"),
        ("http://[::1]:8000/", "http://[::1]:8000"),
        ("http://home.example:8000.evil.example", "not an http"),
        ("http://home.example:8000@evil.example", "user name"),
        ("http://user:pw@home.example:8000", "user name"),
        ("http://home.example:8000/?next=http://evil", "query"),
        ("http://home.example:8000/#frag", "fragment"),
        ("file:///etc/passwd", "not an http"),
        ("gopher://home.example:70", "not an http"),
        ("home.example:8000", "not an http"),
        ("http://", "not an http"),
        ("", "not an http"),
    ],
)
def test_endpoints_compare_in_one_canonical_form(url, expected):
    if expected.startswith("http"):
        assert canonical_endpoint(url) == expected
    else:
        with pytest.raises(EndpointError, match=expected):
            canonical_endpoint(url)


def _policy(**kw) -> EndpointPolicy:
    return EndpointPolicy.create(endpoint=HOME, api_key=SECRET, environ={}, **kw)


CANON_HOME, CANON_OTHER = canonical_endpoint(HOME), canonical_endpoint(OTHER)


@pytest.mark.parametrize(
    ("policy", "typed_endpoint", "typed_key", "expected"),
    [
        # (endpoint, key sent, trusted) or the refusal's phrase
        ({}, "", "", (CANON_HOME, SECRET, True)),
        ({}, HOME + "/v1/", "", (CANON_HOME, SECRET, True)),
        ({}, "", "mine", (CANON_HOME, "mine", True)),
        ({}, OTHER, "", (CANON_OTHER, None, False)),  # never the Space's key
        ({}, OTHER, "  ", (CANON_OTHER, None, False)),
        ({}, OTHER, "mine", (CANON_OTHER, "mine", False)),
        ({}, "http://home.example:8000.evil.example", "", "not an http"),
        ({}, "http://home.example:8000@evil.example", "", "user name"),
        ({"trusted_endpoints": [OTHER]}, OTHER, "", (CANON_OTHER, SECRET, True)),
        ({"locked": True}, "", "", (CANON_HOME, SECRET, True)),
        ({"locked": True}, HOME, "mine", (CANON_HOME, "mine", True)),
        ({"locked": True}, OTHER, "mine", "locked to its configured endpoint"),
        ({"locked": True}, "not a url", "", "not an http"),
    ],
)
def test_which_key_goes_where(policy, typed_endpoint, typed_key, expected):
    policy = _policy(**policy)
    if isinstance(expected, str):
        with pytest.raises(EndpointError, match=expected):
            policy.connect(typed_endpoint, typed_key)
        return
    connection = policy.connect(typed_endpoint, typed_key)
    assert (connection.endpoint, connection.api_key, connection.trusted) == expected
    assert SECRET not in repr(connection) and SECRET not in repr(policy)


@pytest.mark.parametrize(
    ("environ", "locked", "phrase"),
    [
        ({}, False, None),  # run locally: typed endpoints allowed
        ({"SPACE_ID": "acme/arena"}, True, None),  # deployed on the Hub: locked by default
        ({"SPACE_ID": "acme/arena", "LORADOCK_LOCK_ENDPOINT": "0"}, False, None),
        ({"LORADOCK_LOCK_ENDPOINT": "yes"}, True, None),
        ({"LORADOCK_LOCK_ENDPOINT": "maybe"}, None, "not a yes/no value"),
        ({"LORADOCK_LOCK_ENDPOINT": "1", "LORADOCK_TRUSTED_ENDPOINTS": OTHER}, None, "set one"),
        ({"LORADOCK_TRUSTED_ENDPOINTS": "ftp://x"}, None, "not an http"),
        ({"LORADOCK_ENDPOINT": "http://u:p@home.example"}, None, "user name"),
    ],
)
def test_endpoint_settings_from_the_environment(environ, locked, phrase):
    if phrase:
        with pytest.raises((ValueError, EndpointError), match=phrase):
            EndpointPolicy.create(environ=environ)
    else:
        assert EndpointPolicy.create(environ=environ).locked is locked


@pytest.mark.parametrize(
    ("value", "limit"),
    [(None, 30), ("5", 5), (1, 1), ("0", None), ("-3", None), ("lots", None), ("", 30)],
)
def test_the_vote_limit_setting(monkeypatch, value, limit):
    monkeypatch.setenv("LORADOCK_ARENA_VOTES_PER_SESSION", "" if value is None else str(value))
    if limit is None:
        with pytest.raises(ValueError, match="positive whole number"):
            session_vote_limit()
    else:
        assert session_vote_limit() == limit


# -- the page: values from cards and endpoints are shown, never obeyed ----------------
HOSTILE = [
    "acme/x`](http://evil.example)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[click me](javascript:alert(1))",
    "![pixel](http://evil.example/p.png)",
    "a | b\n| injected | row |",
    "# heading\n\nnew paragraph",
    "``tick`` `",
    "www.evil.example and http://evil.example",
]
FORBIDDEN_TAGS = ("<a ", "<img", "<script", "<h1", "<h2", "<iframe")


def _rendered(markdown: str) -> str:
    html = rendered_html(markdown)
    for tag in FORBIDDEN_TAGS:
        assert tag not in html, (tag, markdown, html)
    return html


@pytest.mark.parametrize("value", HOSTILE)
def test_markup_helpers_keep_values_inert(value):
    assert "://" not in md_text(value)  # a bare URL would become a link (GFM autolinks)
    _rendered(f"status: {md_text(value)}")
    html = _rendered(f"name: {md_code(value)}")
    assert html.count("<code>") == 1
    table = _rendered(
        f"| k | v |\n|---|---|\n| {md_text(value)} | {md_code(value, in_table=True)} |"
    )
    assert table.count("<tr>") == 2  # the header and the one row: no injected rows


@pytest.mark.parametrize("value", HOSTILE)
def test_lineage_escapes_every_card_value(value):
    card = AdapterCardView(
        repo_id=value,
        markdown="",
        sha=value,
        lineage={
            "base_model": value,
            "base_revision": value,
            "datasets": [value],
            "training": {value: value},
            "license": value,
        },
    )
    row = AdapterRow(repo_id=value, tasks=(value,))
    html = _rendered(lineage_markdown(row, card))
    assert html.count("<tr>") == 1 + 1 + 1 + 1  # two tables, header + one row each


# -- the Space's own key against a real capture server --------------------------------
@pytest.fixture
def space(tmp_path, keyed_standin_url):
    return SpaceApp(
        endpoint=keyed_standin_url,
        api_key=SECRET,
        lock_endpoint=False,
        arena_db=tmp_path / "arena.sqlite",
        rng=random.Random(0),
    )


def _refresh(space, endpoint, key=""):
    *updates, status = asyncio.run(space.refresh(endpoint, key, None, None))
    return updates, status


def _battle(space, endpoint, key=""):
    async def go():
        return [x async for x in space.battle(endpoint, key, BASE, "dates", "March 3", 8)]

    return asyncio.run(go())[-1]


@pytest.mark.parametrize(
    ("typed", "key", "status_phrase", "requests_arrive"),
    [
        ("{url}", "", "Connected", True),  # answered, but with no key at all
        ("{url}/v1/", "", "Connected", True),
        ("HTTP://127.0.0.1:{port}", "", "Connected", True),
        ("{url}", "visitor-key", "Connected", True),  # the visitor's own key, and only it
        ("http://{secret}@127.0.0.1:{port}", "", "user name", False),
        ("{url}?key={secret}", "", "query", False),
    ],
)
def test_the_space_key_never_reaches_a_typed_endpoint(
    space, typed, key, status_phrase, requests_arrive
):
    with capture_server() as captured:
        port = captured.url.rsplit(":", 1)[1]
        typed = typed.format(url=captured.url, port=port, secret=SECRET)
        _, status = _refresh(space, typed, key)
        assert status_phrase in status
        assert bool(captured.requests) is requests_arrive
        assert not captured.seen(SECRET)
        assert set(captured.authorizations()) <= {"", f"Bearer {key}" if key else ""}
        # The configured endpoint keeps working (it refuses any request without the key).
        assert "Connected" in _refresh(space, "")[1]


def test_a_locked_space_calls_no_other_host(tmp_path, keyed_standin_url):
    space = SpaceApp(
        endpoint=keyed_standin_url,
        api_key=SECRET,
        lock_endpoint=True,
        arena_db=tmp_path / "arena.sqlite",
    )
    with capture_server() as captured:
        for key in ("", "visitor-key"):
            _, status = _refresh(space, captured.url, key)
            assert "locked to its configured endpoint" in status
        assert captured.requests == []
    assert "Connected" in _refresh(space, "")[1]


def test_a_fake_endpoint_puts_no_names_on_the_shared_arena(space):
    with capture_server() as captured:
        *_, status = _battle(space, captured.url, "visitor-key")
        assert "configured endpoint only" in status
        caption, table, *_ = asyncio.run(
            space.leaderboard(captured.url, "visitor-key", "evil/base", None, None, True, None)
        )
        assert "configured endpoint" in caption
        assert FAKE_ADAPTER in set(table.data["model"])  # its rows, without arena figures
        assert table.data["arena_games"].sum() == 0
    # A vote needs a finished battle, and battles run on the configured endpoint only.
    pending = _battle(space, "")[5]
    assert {pending.model_a, pending.model_b} <= {BASE, "acme/dates-r8", "acme/dates-r16"}
    asyncio.run(space.vote("a", pending, 0, "", "", BASE, "dates", None, True, None))
    assert {n for v in space.arena.votes() for n in (v.model_a, v.model_b)} <= {
        BASE,
        "acme/dates-r8",
        "acme/dates-r16",
    }


def test_votes_per_session_are_limited(tmp_path, keyed_standin_url):
    space = SpaceApp(
        endpoint=keyed_standin_url,
        api_key=SECRET,
        arena_db=tmp_path / "arena.sqlite",
        votes_per_session=2,
        rng=random.Random(0),
    )
    cast, statuses = 0, []
    for _ in range(3):
        pending = _battle(space, "")[5]
        *_, status, cast = asyncio.run(
            space.vote("tie", pending, cast, "", "", BASE, "dates", None, True, None)
        )
        statuses.append(status)
    assert statuses[:2] == ["Vote recorded. Start another battle!"] * 2
    assert "Vote limit reached" in statuses[2] and "2 votes" in statuses[2]
    assert cast == 2 and len(space.arena.votes()) == 2
    # Another session (a fresh count) may vote again.
    *_, status, cast = asyncio.run(
        space.vote("tie", _battle(space, "")[5], 0, "", "", BASE, "dates", None, True, None)
    )
    assert cast == 1 and len(space.arena.votes()) == 3
