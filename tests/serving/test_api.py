"""The server driven by the real ``openai`` client over HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.serving import ADMIN_KEY, API_KEY, BASE_ID, greedy_burst

PROMPT = "The capital of France is"


def greedy(client, model, prompt=PROMPT, **kw):
    return client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0, **kw)


def test_completion_base_and_adapter_differ(live_server):
    client = live_server.client()
    adapter = live_server.published.adapters[0]
    base = greedy(client, BASE_ID)
    tuned = greedy(client, adapter)
    assert base.model == BASE_ID and tuned.model == adapter
    for out in (base, tuned):
        choice = out.choices[0]
        assert choice.finish_reason in ("stop", "length")
        assert out.usage.prompt_tokens > 0
        assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert base.choices[0].text != tuned.choices[0].text  # the adapter changes the output
    assert greedy(client, adapter).choices[0].text == tuned.choices[0].text  # deterministic


def test_names_by_sha_alias_and_served_alias(live_server):
    pub = live_server.published
    repo = pub.adapters[1]
    client = live_server.client()
    texts = {
        name: greedy(client, name).choices[0].text
        for name in (repo, f"{repo}@{pub.shas[repo]}", f"{repo}@prod", "dates")
    }
    assert len(set(texts.values())) == 1, texts


def test_length_and_usage(live_server):
    out = live_server.client().completions.create(
        model=BASE_ID, prompt=PROMPT, max_tokens=5, temperature=0
    )
    assert out.usage.completion_tokens <= 5
    if out.usage.completion_tokens == 5:
        assert out.choices[0].finish_reason == "length"


def test_seeded_sampling_is_reproducible(live_server):
    client = live_server.client()
    adapter = live_server.published.adapters[2]
    kw = dict(model=adapter, prompt=PROMPT, max_tokens=12, temperature=1.0, top_p=0.9)
    a = client.completions.create(seed=7, **kw).choices[0].text
    b = client.completions.create(seed=7, **kw).choices[0].text
    others = {client.completions.create(seed=s, **kw).choices[0].text for s in range(8, 12)}
    assert a == b
    assert len(others | {a}) > 1  # different seeds sample differently


def test_stop_string_ends_with_stop(live_server):
    client = live_server.client()
    full = greedy(client, BASE_ID).choices[0].text
    if len(full) < 3:
        pytest.skip(f"greedy output too short to cut: {full!r}")
    stop = full[2:4]
    out = greedy(client, BASE_ID, stop=[stop])
    assert out.choices[0].finish_reason == "stop"
    assert stop not in out.choices[0].text
    assert full.startswith(out.choices[0].text)


def test_streaming_completion_matches_whole(live_server):
    client = live_server.client()
    adapter = live_server.published.adapters[0]
    whole = greedy(client, adapter).choices[0].text
    chunks = list(greedy(client, adapter, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_chat_and_chat_stream(live_server):
    client = live_server.client()
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Convert 3 March 2024 to ISO."},
    ]
    kw = dict(model="dates", messages=messages, max_tokens=10, temperature=0)
    out = client.chat.completions.create(**kw)
    assert out.choices[0].message.role == "assistant"
    assert out.usage.completion_tokens >= 1
    stream = client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kw
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == out.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [out.choices[0].finish_reason]


def test_burst_across_adapters_matches_solo(live_server):
    """Many adapters in one burst (batched together, with evictions: more adapters than slots)."""
    client = live_server.client()
    names = [BASE_ID, *live_server.published.adapters[:5]]
    solo = {n: greedy(client, n).choices[0].text for n in names}

    results = greedy_burst(live_server, names * 3, PROMPT)
    for name, res in zip(names * 3, results, strict=True):
        assert res.choices[0].text == solo[name], name


def test_models_list(live_server):
    models = {m.id: m for m in live_server.client().models.list().data}
    assert BASE_ID in models and "dates" in models
    for repo in live_server.published.adapters:
        assert models[repo].model_extra.get("parent") == BASE_ID
    assert live_server.published.incompatible not in models  # made for another base


def test_admin_load_and_unload(live_server):
    repo = live_server.published.adapters[4]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    loaded = httpx.post(
        f"{live_server.base_url}/adapters/load", json={"model": repo}, headers=admin
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["sha"] == live_server.published.shas[repo]
    health = httpx.get(f"{live_server.url}/health", headers=admin).json()
    assert repo in health["loaded_adapters"]
    gone = httpx.post(
        f"{live_server.base_url}/adapters/unload", json={"model": repo}, headers=admin
    )
    assert gone.status_code == 200, gone.text
    health = httpx.get(f"{live_server.url}/health", headers=admin).json()
    assert repo not in health["loaded_adapters"]
    again = httpx.post(
        f"{live_server.base_url}/adapters/unload", json={"model": repo}, headers=admin
    )
    assert again.status_code == 404 and "not loaded" in again.json()["error"]["message"]
    assert greedy(live_server.client(), repo).choices[0].text  # loads again on demand


def test_metrics(live_server):
    greedy(live_server.client(), live_server.published.adapters[0])
    text = httpx.get(f"{live_server.url}/metrics").text
    for name in (
        "loradock_requests_total",
        "loradock_completion_tokens_total",
        "loradock_request_latency_seconds_bucket",
        "loradock_time_to_first_token_seconds_count",
        "loradock_queue_depth",
        "loradock_adapter_loads_total",
        "loradock_adapter_evictions_total",
        'loradock_adapter_cache_hits_total{tier="slot"}',
    ):
        assert name in text, name


def test_registry_routes(live_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    rows = httpx.get(
        f"{live_server.base_url}/registry/adapters", params={"task": "dates"}, headers=headers
    ).json()["data"]
    assert rows and all("dates" in r["tasks"] for r in rows)
    repo = live_server.published.adapters[0]
    org, name = repo.split("/")
    card = httpx.get(f"{live_server.base_url}/registry/adapters/{org}/{name}/card", headers=headers)
    assert card.status_code == 200, card.text
    body = card.json()
    assert "base_model: tiny/base" in body["card"]
    assert body["aliases"].get("prod") == live_server.published.shas[repo]
    assert body["revisions"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("base", {"tiny/base"}),
        ("adapter", {"acme/adapter-000", "acme/adapter-005"}),
        ("merge", set()),
    ],
)
def test_registry_rows_by_kind(live_server, kind, expected):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    resp = httpx.get(
        f"{live_server.base_url}/registry/adapters", params={"kind": kind}, headers=headers
    )
    assert resp.status_code == 200, resp.text
    rows = resp.json()["data"]
    assert {r["kind"] for r in rows} <= {kind}
    assert expected <= {r["repo_id"] for r in rows}
    if not expected:
        assert rows == []
