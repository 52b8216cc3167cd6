"""The Space's HTTP client: what it reads from an endpoint and how every failure reads."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from space_standin import BASE, OLD_SHA, SHA, canned_answer, free_port, png_bytes

from loradock.spaces.client import (
    AdapterRow,
    EndpointError,
    GenerationStats,
    LoradockClient,
    ModelGoneError,
    lineage_from_meta,
    split_card,
)


def run(coro):
    return asyncio.run(coro)


async def collect(
    client: LoradockClient, model: str, prompt: str, **kw
) -> tuple[str, GenerationStats]:
    stats = GenerationStats(model=model)
    text = "".join([d async for d in client.stream_chat(model, prompt, stats=stats, **kw)])
    return text, stats


def test_lists_models_and_registry_rows(standin_url):
    client = LoradockClient(standin_url)
    models = run(client.list_models())
    assert [m.id for m in models if m.parent is None] == [BASE]
    assert {m.parent for m in models if m.parent} == {BASE}
    rows = run(client.list_adapters(base=BASE, task="extraction"))
    assert [r.repo_id for r in rows] == ["acme/extract-r8"]
    assert rows[0].metrics == {"extraction/exact_match": 0.55, "extraction/field_accuracy": 0.8}
    assert rows[0].tasks == ("extraction",) and rows[0].extra["rank"] == 8


def test_reads_a_card_with_lineage(standin_url):
    card = run(LoradockClient(standin_url).adapter_card("acme/dates-r16"))
    assert card.markdown.startswith("# acme/dates-r16")
    assert card.lineage["base_model"] == BASE and card.lineage["aliases"] == {"prod": "a" * 40}


def test_streams_a_chat_completion_with_stats(standin_url):
    prompt = "one two three four"
    text, stats = run(collect(LoradockClient(standin_url + "/v1/"), "acme/dates-r8", prompt))
    assert text == canned_answer("acme/dates-r8", prompt)
    assert stats.completion_tokens == 5 and stats.prompt_tokens == 4  # from the usage chunk
    assert stats.first_token_s is not None and stats.total_s >= stats.first_token_s
    assert stats.finish_reason == "stop"
    assert "5 tokens" in stats.summary()


def test_max_tokens_reaches_the_endpoint(standin_url):
    text, stats = run(collect(LoradockClient(standin_url), BASE, "a b c d e f", max_tokens=2))
    assert text == "[base] f" and stats.completion_tokens == 2


@pytest.mark.parametrize(
    ("repo", "path", "revision", "phrase"),
    [
        ("acme/dates-r8", "training_loss.png", None, None),
        ("acme/dates-r8", "training_loss.png", SHA, None),  # by the card's revision
        ("acme/dates-r8", "training_loss.png", OLD_SHA, "no such file at this revision"),
        ("acme/dates-r8", "other.png", SHA, "no such file"),
        ("acme/dates-r8", "../secret.png", None, "not a file of the repo"),
        ("acme/dates-r8", "/etc/passwd", None, "not a file of the repo"),
        ("acme/dates-r8", "http://evil.example/x.png", None, "not a file of the repo"),
        ("no-slash", "training_loss.png", None, "not of the form 'org/name'"),
    ],
)
def test_reads_a_file_the_card_links(standin_url, repo, path, revision, phrase):
    client = LoradockClient(standin_url)
    if phrase is None:
        data, media = run(client.card_file(repo, path, revision=revision))
        assert (data, media) == (png_bytes(), "image/png")
        return
    with pytest.raises(EndpointError, match=re.escape(phrase)):
        run(client.card_file(repo, path, revision=revision))


def test_api_key_is_sent_as_bearer(keyed_standin_url):
    assert run(LoradockClient(keyed_standin_url, api_key="sekret").list_models())


def test_the_client_takes_no_key_from_the_environment(monkeypatch, keyed_standin_url):
    """Which key goes where is the Space's decision (endpoints.py), never a silent default."""
    monkeypatch.setenv("LORADOCK_API_KEY", "sekret")
    with pytest.raises(EndpointError, match="refused the API key"):
        run(LoradockClient(keyed_standin_url).list_models())


DOWN = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize(
    ("endpoint", "key", "call", "error", "phrases"),
    [
        (DOWN, None, lambda c: c.list_models(), EndpointError, ["cannot reach", "loradock serve"]),
        (DOWN, None, lambda c: collect(c, BASE, "x"), EndpointError, ["cannot reach", BASE]),
        (
            "KEYED",
            "wrong",
            lambda c: c.list_models(),
            EndpointError,
            ["refused the API key", "401"],
        ),
        ("KEYED", None, lambda c: c.list_adapters(), EndpointError, ["LORADOCK_API_KEY"]),
        (
            "OPEN",
            None,
            lambda c: collect(c, "acme/gone", "x"),
            ModelGoneError,
            ["acme/gone", "404", "refresh"],
        ),
        (
            "OPEN",
            None,
            lambda c: collect(c, "nobody/none", "x"),
            ModelGoneError,
            ["does not exist"],
        ),
        (
            "OPEN",
            None,
            lambda c: c.adapter_card("acme/missing"),
            ModelGoneError,
            ["acme/missing", "not in the registry"],
        ),
        (
            "OPEN",
            None,
            lambda c: c.adapter_card("no-slash"),
            EndpointError,
            ["'no-slash'", "org/name"],
        ),
        ("OPEN", None, lambda c: c.adapter_card("a/b/c"), EndpointError, ["'a/b/c'"]),
    ],
)
def test_failures_read_as_messages(
    standin_url, keyed_standin_url, endpoint, key, call, error, phrases
):
    endpoint = {"OPEN": standin_url, "KEYED": keyed_standin_url}.get(endpoint, endpoint)
    with pytest.raises(error) as info:
        run(call(LoradockClient(endpoint, api_key=key)))
    for phrase in phrases:
        assert phrase in str(info.value)


@pytest.mark.parametrize("endpoint", ["localhost:8000", "ftp://host", "  not a url"])
def test_a_malformed_endpoint_url_is_refused(endpoint):
    with pytest.raises(EndpointError, match="not an http"):
        LoradockClient(endpoint)


def _mock(handler) -> LoradockClient:
    return LoradockClient("http://mock", transport=httpx.MockTransport(handler))


SSE = "text/event-stream"


@pytest.mark.parametrize(
    ("response", "phrases"),
    [
        (httpx.Response(500, text="<html>boom</html>"), ["HTTP 500", "boom"]),
        (httpx.Response(503, json={"detail": "warming up"}), ["HTTP 503", "warming up"]),
        (httpx.Response(200, text="not json"), ["not JSON", "loradock server"]),
        (httpx.Response(200, json={"unexpected": True}), ["unexpected answer"]),
    ],
)
def test_bad_answers_to_listing_read_as_messages(response, phrases):
    with pytest.raises(EndpointError) as info:
        run(_mock(lambda request: response).list_models())
    for phrase in phrases:
        assert phrase in str(info.value)


@pytest.mark.parametrize(
    ("body", "phrases"),
    [
        ('data: {"error": {"message": "engine crashed"}}\n\n', ["mid-stream", "engine crashed"]),
        ("data: {not json\n\n", ["malformed chunk"]),
    ],
)
def test_broken_streams_read_as_messages(body, phrases):
    client = _mock(lambda request: httpx.Response(200, text=body, headers={"content-type": SSE}))
    with pytest.raises(EndpointError) as info:
        run(collect(client, BASE, "x"))
    for phrase in phrases:
        assert phrase in str(info.value)


def test_a_timeout_reads_as_a_message():
    def slow(request):
        raise httpx.ReadTimeout("too slow", request=request)

    with pytest.raises(EndpointError, match="did not answer within"):
        run(_mock(slow).list_models())


def test_stream_without_usage_counts_chunks():
    body = (
        "".join(
            f'data: {{"choices": [{{"delta": {{"content": "{t}"}}}}]}}\n\n' for t in ("a", "b", "c")
        )
        + "data: [DONE]\n\n"
    )
    client = _mock(lambda request: httpx.Response(200, text=body, headers={"content-type": SSE}))
    text, stats = run(collect(client, BASE, "x"))
    assert text == "abc" and stats.completion_tokens == 3 and stats.prompt_tokens is None


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"repo_id": "o/n", "task": "dates"}, {"tasks": ("dates",), "kind": "adapter"}),
        ({"repo_id": "o/n", "aliases": ["prod"], "sha": "s1"}, {"aliases": {"prod": "s1"}}),
        ({"repo_id": "o/n", "aliases": {"prod": "s2"}}, {"aliases": {"prod": "s2"}}),
        (
            {"repo_id": "o/n", "metrics": [{"task": "t", "metric": "m", "value": 1}]},
            {"metrics": {"t/m": 1.0}},
        ),
        ({"repo_id": "o/n", "revisions": [{"sha": "s1"}, "s2"]}, {"revisions": ("s1", "s2")}),
    ],
)
def test_index_rows_in_the_shapes_a_server_may_send(row, expected):
    parsed = AdapterRow.from_json(row)
    for key, value in expected.items():
        assert getattr(parsed, key) == value


@pytest.mark.parametrize(
    ("text", "meta", "body"),
    [
        ("---\nbase_model: b\n---\n\n# Title\n", {"base_model": "b"}, "# Title\n"),
        ("# No front matter\n", {}, "# No front matter\n"),
        ("---\nbase_model: [unclosed\n---\nbody", {}, "---\nbase_model: [unclosed\n---\nbody"),
        ("---\n- a list\n---\nbody", {}, "---\n- a list\n---\nbody"),
        ("---\nnever closed", {}, "---\nnever closed"),
    ],
)
def test_split_card_keeps_bad_front_matter_as_text(text, meta, body):
    assert split_card(text) == (meta, body)


def test_lineage_from_a_loradock_card():
    meta = {
        "base_model": "tiny/base",
        "base_model_revision": "r1",
        "datasets": ["d"],
        "loradock": {"r": 8},
        "tags": ["peft"],
    }
    assert lineage_from_meta(meta) == {
        "base_model": "tiny/base",
        "base_revision": "r1",
        "datasets": ["d"],
        "training": {"r": 8},
    }
