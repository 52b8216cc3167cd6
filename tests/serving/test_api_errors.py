"""Bad requests: each gets the right status, the OpenAI error shape and a message that says
what was wrong, and the server answers a good request right after."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.helpers.serving import ADMIN_KEY, API_KEY, BASE_ID, LIVE_CONTEXT

LONG_PROMPT = "the capital of France is Paris " * 60  # far over the live server's context
ADAPTER = "acme/adapter-000"

# (id, route, body, key, status, fragment of the message)
CASES = [
    ("unknown-model", "completions", {"model": "nope"}, API_KEY, 404, "'nope' does not exist"),
    ("unknown-repo", "completions", {"model": "acme/missing"}, API_KEY, 404, "acme/missing"),
    ("unknown-alias", "completions", {"model": f"{ADAPTER}@staging"}, API_KEY, 404, "staging"),
    ("unknown-sha", "completions", {"model": f"{ADAPTER}@{'0' * 40}"}, API_KEY, 404, "0000000"),
    ("bad-name", "completions", {"model": "acme/bad name"}, API_KEY, 400, "whitespace"),
    ("empty-model", "completions", {"model": ""}, API_KEY, 400, "model"),
    ("temperature", "completions", {"temperature": -1}, API_KEY, 400, "temperature"),
    ("max-tokens-0", "completions", {"max_tokens": 0}, API_KEY, 400, "max_tokens"),
    ("top-p-2", "completions", {"top_p": 2}, API_KEY, 400, "top_p"),
    ("n-too-many", "completions", {"n": 65}, API_KEY, 400, "n"),
    ("empty-prompt", "completions", {"prompt": ""}, API_KEY, 400, "a prompt is empty"),
    ("no-prompts", "completions", {"prompt": []}, API_KEY, 400, "empty list"),
    ("unknown-field", "completions", {"temprature": 0}, API_KEY, 400, "temprature: unknown"),
    ("not-honoured", "completions", {"suffix": "x"}, API_KEY, 400, "suffix: insertion"),
    ("best-of", "completions", {"best_of": 3}, API_KEY, 400, "best_of=3"),
    (
        "big-max-tokens",
        "completions",
        {"max_tokens": LIVE_CONTEXT - 2},
        API_KEY,
        400,
        "ask for at most",
    ),
    ("bias-vocab", "completions", {"logit_bias": {"999999": 1}}, API_KEY, 400, "logit_bias"),
    ("bias-value", "completions", {"logit_bias": {"1": 101}}, API_KEY, 400, "[-100, 100]"),
    ("logprobs-21", "completions", {"logprobs": 21}, API_KEY, 400, "logprobs"),
    ("top-k", "completions", {"top_k": -2}, API_KEY, 400, "top_k"),
    ("min-tokens", "completions", {"min_tokens": 5}, API_KEY, 400, "min_tokens=5"),
    ("stop-ids-vocab", "completions", {"stop_token_ids": [10**6]}, API_KEY, 400, "vocabulary"),
    ("top-logprobs-alone", "chat", {"top_logprobs": 2}, API_KEY, 400, "needs logprobs"),
    ("functions", "chat", {"functions": []}, API_KEY, 400, "functions: function calling"),
    ("stream-options", "chat", {"stream_options": {"include_usage": True}}, API_KEY, 400, "stream"),
    (
        "stream-options-key",
        "chat",
        {"stream": True, "stream_options": {"continuous_usage_stats": True}},
        API_KEY,
        400,
        "only include_usage",
    ),
    (
        "message-field",
        "chat",
        {"messages": [{"role": "user", "content": "hi", "weight": 2}]},
        API_KEY,
        400,
        "message fields this server does not honour: ['weight']",
    ),
    (
        "message-refusal-set",
        "chat",
        {"messages": [{"role": "assistant", "content": "no", "refusal": "no"}]},
        API_KEY,
        400,
        "['refusal']",
    ),
    ("too-many-stops", "completions", {"stop": list("abcde")}, API_KEY, 400, "stop"),
    (
        "too-long",
        "completions",
        {"prompt": LONG_PROMPT},
        API_KEY,
        400,
        f"context is {LIVE_CONTEXT} tokens",
    ),
    ("no-messages", "chat", {"messages": []}, API_KEY, 400, "messages is empty"),
    ("bad-role", "chat", {"messages": [{"role": "robot", "content": "hi"}]}, API_KEY, 400, "role"),
    (
        "image-part",
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        API_KEY,
        400,
        "only text parts",
    ),
    (
        "chat-too-long",
        "chat",
        {"messages": [{"role": "user", "content": LONG_PROMPT}]},
        API_KEY,
        400,
        "Shorten",
    ),
    ("wrong-key", "completions", {}, "sk-wrong", 401, "Invalid API key"),
    ("no-key", "completions", {}, None, 401, "Missing API key"),
    ("admin-with-api-key", "load", {"model": ADAPTER}, API_KEY, 403, "admin key"),
    ("admin-wrong-key", "load", {"model": ADAPTER}, "sk-wrong", 401, "Invalid admin key"),
    ("admin-unknown", "load", {"model": "acme/missing"}, ADMIN_KEY, 404, "acme/missing"),
    ("admin-unload-base", "unload", {"model": BASE_ID}, ADMIN_KEY, 400, "base model"),
    # made for another base: not indexed for this one, so a request cannot name it; the
    # admin can load it, and the compatibility check refuses it
    ("not-indexed", "completions", {"model": "acme/other-base-lora"}, API_KEY, 404, "not served"),
    ("incompatible", "load", {"model": "acme/other-base-lora"}, ADMIN_KEY, 422, "cannot be served"),
    ("abs-path", "completions", {"model": "/etc/passwd"}, API_KEY, 400, "looks like a file path"),
    ("dotdot", "completions", {"model": "../../secrets"}, API_KEY, 400, "looks like a file path"),
    (
        "dotdot-inside",
        "completions",
        {"model": "acme/../x"},
        API_KEY,
        400,
        "looks like a file path",
    ),
    ("home-path", "completions", {"model": "~/.cache/x"}, API_KEY, 400, "looks like a file path"),
    (
        "deep-path",
        "completions",
        {"model": "tmp/a/adapter"},
        API_KEY,
        400,
        "looks like a file path",
    ),
    ("unknown-route", "models-typo", {}, API_KEY, 404, "Not Found"),
]

ROUTES = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
    "load": "/v1/adapters/load",
    "unload": "/v1/adapters/unload",
    "models-typo": "/v1/modelz",
}


def _body(route: str, extra: dict) -> dict:
    if route == "completions":
        base = {"model": ADAPTER, "prompt": "Hello", "max_tokens": 4}
    elif route == "chat":
        base = {"model": ADAPTER, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    else:
        base = {}
    return {**base, **extra}


def _assert_alive(live_server) -> None:
    out = live_server.client().completions.create(
        model=ADAPTER, prompt="Hello", max_tokens=3, temperature=0
    )
    assert out.usage.completion_tokens >= 1


@pytest.mark.parametrize(
    ("route", "extra", "key", "status", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_request(live_server, route, extra, key, status, fragment):
    body = _body(route, extra)
    if key is not None and route in ("completions", "chat", "load", "unload"):
        # The real client where it can speak: its exception carries status and error body.
        client = live_server.client(key=key)
        with pytest.raises(openai.APIStatusError) as info:
            client.post(ROUTES[route].removeprefix("/v1"), body=body, cast_to=httpx.Response)
        got_status, error = info.value.status_code, info.value.body
        if isinstance(error, dict) and "error" in error:
            error = error["error"]
    else:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        method = httpx.post if route != "models-typo" else httpx.get
        kwargs = {"json": body} if method is httpx.post else {}
        resp = method(f"{live_server.url}{ROUTES[route]}", headers=headers, **kwargs)
        got_status, error = resp.status_code, resp.json()["error"]
    assert got_status == status, error
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert fragment in error["message"], error["message"]
    _assert_alive(live_server)


REGISTRY_CASES = [
    ("kind-unknown", {"kind": "lora"}, 400, "kind 'lora' is not one of adapter, base, merge"),
    ("kind-empty", {"kind": ""}, 400, "kind '' is not one of"),
    ("kind-case", {"kind": "BASE"}, 400, "kind 'BASE'"),
    ("limit-0", {"limit": 0}, 400, "limit"),
    ("min-value-text", {"min_value": "high"}, 400, "min_value"),
    ("min-value-alone", {"min_value": 0.5}, 400, "needs a metric"),
    ("sort-unknown", {"sort": "best"}, 400, "sort='best'"),
]


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [c[1:] for c in REGISTRY_CASES],
    ids=[c[0] for c in REGISTRY_CASES],
)
def test_bad_registry_query(live_server, params, status, fragment):
    resp = httpx.get(
        f"{live_server.base_url}/registry/adapters",
        params=params,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert fragment in error["message"], error["message"]
    _assert_alive(live_server)


def test_malformed_json_is_400(live_server):
    resp = httpx.post(
        f"{live_server.url}/v1/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    _assert_alive(live_server)


def test_queue_full_is_429_and_server_recovers(queue_server):
    """A server with room for one running and one waiting request turns the rest away."""
    from openai import AsyncOpenAI

    async def flood():
        async with AsyncOpenAI(base_url=f"{queue_server}/v1", api_key=API_KEY, max_retries=0) as c:
            calls = [
                c.completions.create(model=BASE_ID, prompt="Hello", max_tokens=64, temperature=0)
                for _ in range(8)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(flood())
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert refused and served, results
    assert "queue is full" in refused[0].body["message"]
    assert refused[0].response.headers["retry-after"] == "1"  # when to try again
    assert all(isinstance(r, (openai.RateLimitError,)) or r in served for r in results)
    client = openai.OpenAI(base_url=f"{queue_server}/v1", api_key=API_KEY, max_retries=0)
    assert client.completions.create(model=BASE_ID, prompt="Hi", max_tokens=2).usage
