"""The OpenAI request surface, driven by the real ``openai`` client on every engine: each
field does what it says (or is refused, test_api_errors.py), never silently nothing."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers.serving import API_KEY, BASE_ID, LIVE_CONTEXT

PROMPT = "The capital of France is"
ADAPTER = "acme/adapter-000"
TOKEN = 42  # a token of the tiny vocabulary (384 ids)
# vLLM's extensions: the openai client sends them in ``extra_body``
EXTENSIONS = {"top_k", "min_p", "repetition_penalty", "stop_token_ids", "min_tokens"}


def _args(kw: dict) -> dict:
    extra = {k: kw.pop(k) for k in list(kw) if k in EXTENSIONS}
    return {**kw, "extra_body": {**kw.pop("extra_body", {}), **extra}}


def complete(client, **kw):
    args = {"model": ADAPTER, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, **kw}
    return client.completions.create(**_args(args))


def chat(client, **kw):
    messages = [{"role": "user", "content": PROMPT}]
    args = {"model": ADAPTER, "messages": messages, "max_tokens": 8, "temperature": 0, **kw}
    return client.chat.completions.create(**_args(args))


def tokens_of(out) -> list[str]:
    return out.choices[0].logprobs.tokens


def _forced(client, **kw):
    """Every token forced to TOKEN by its bias: what stop_token_ids and min_tokens act on."""
    return complete(client, logit_bias={str(TOKEN): 100}, logprobs=0, **kw)


# (id, request, check(response, plain greedy response))
CASES = [
    (
        "logit_bias",
        lambda c: _forced(c),
        lambda out, plain: len(set(tokens_of(out))) == 1 and tokens_of(out) != tokens_of(plain),
    ),
    (
        "stop_token_ids",
        lambda c: _forced(c, stop_token_ids=[TOKEN]),
        lambda out, plain: (
            out.choices[0].finish_reason == "stop" and out.usage.completion_tokens == 1
        ),
    ),
    (
        "min_tokens",
        lambda c: _forced(c, stop_token_ids=[TOKEN], min_tokens=3, max_tokens=8),
        lambda out, plain: (
            out.choices[0].finish_reason == "stop" and out.usage.completion_tokens == 4
        ),
    ),
    (
        "top_k=1 samples greedily",
        lambda c: complete(c, temperature=1.0, top_k=1, seed=3, logprobs=0),
        lambda out, plain: tokens_of(out) == tokens_of(plain),
    ),
    (
        "min_p=1 samples greedily",
        lambda c: complete(c, temperature=1.0, min_p=1.0, seed=3, logprobs=0),
        lambda out, plain: tokens_of(out) == tokens_of(plain),
    ),
    (
        "repetition_penalty",
        lambda c: complete(c, repetition_penalty=5.0, logprobs=0),
        lambda out, plain: len(set(tokens_of(out))) > len(set(tokens_of(plain))),
    ),
    (
        "presence_penalty",
        lambda c: complete(c, presence_penalty=2.0, logprobs=0),
        lambda out, plain: len(set(tokens_of(out))) > len(set(tokens_of(plain))),
    ),
    (
        "frequency_penalty",
        lambda c: complete(c, frequency_penalty=2.0, logprobs=0),
        lambda out, plain: len(set(tokens_of(out))) > len(set(tokens_of(plain))),
    ),
    (
        "accepted bookkeeping fields",
        lambda c: complete(c, user="u1", logprobs=0, extra_body={"metadata": None}),
        lambda out, plain: tokens_of(out) == tokens_of(plain),
    ),
]


@pytest.mark.parametrize(("make", "check"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sampling_field_is_honoured(live_server, make, check):
    client = live_server.client()
    plain = complete(client, logprobs=0)
    out = make(client)
    assert check(out, plain), (out.choices[0], plain.choices[0])


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_greedy_is_the_same_with_logprobs(live_server, route):
    client = live_server.client()
    if route == "chat":
        plain, scored = chat(client), chat(client, logprobs=True, top_logprobs=3)
        text_of = lambda out: out.choices[0].message.content  # noqa: E731
        entries = scored.choices[0].logprobs.content
        pairs = [(e.logprob, [t.logprob for t in e.top_logprobs]) for e in entries]
        assert all(len(e.top_logprobs) == 3 for e in entries)
    else:
        plain, scored = complete(client), complete(client, logprobs=3)
        text_of = lambda out: out.choices[0].text  # noqa: E731
        lp = scored.choices[0].logprobs
        pairs = [
            (v, sorted(top.values(), reverse=True))
            for v, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True)
        ]
        assert "".join(lp.tokens) == text_of(scored)
    assert text_of(plain) == text_of(scored) and plain.choices[0].logprobs is None
    assert pairs and len(pairs) == scored.usage.completion_tokens
    for chosen, top in pairs:  # greedy: the chosen token is the best one
        assert top == sorted(top, reverse=True) and chosen == pytest.approx(top[0], abs=1e-4)


def _no_prompt_logprobs(engine_kind: str) -> bool:
    """vLLM's CPU build dies computing prompt logprobs through LoRA: the engine refuses."""
    import torch

    return engine_kind == "vllm" and not torch.cuda.is_available()


def test_echo_scores_the_prompt(live_server, engine_kind):
    """What lm-eval's log-likelihood reads: the prompt's tokens and logprobs, then the answer's."""
    client = live_server.client()
    if _no_prompt_logprobs(engine_kind):
        with pytest.raises(openai.BadRequestError, match="echo with logprobs"):
            complete(client, echo=True, logprobs=1, max_tokens=1)
        assert complete(client, echo=True).choices[0].text.startswith(PROMPT)
        return
    out = complete(client, echo=True, logprobs=1, max_tokens=1)
    lp, choice = out.choices[0].logprobs, out.choices[0]
    n_prompt = out.usage.prompt_tokens
    assert choice.text.startswith(PROMPT) and "".join(lp.tokens) == choice.text
    assert len(lp.tokens) == n_prompt + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset)
    ids = httpx.post(
        f"{live_server.url}/tokenize",
        json={"prompt": PROMPT},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()["tokens"]
    by_ids = complete(client, prompt=ids, echo=True, logprobs=1, max_tokens=1)
    assert by_ids.choices[0].logprobs.token_logprobs == pytest.approx(lp.token_logprobs)


def test_n_and_prompt_lists_in_prompt_order(live_server):
    client = live_server.client()
    prompts = [PROMPT, "Once upon a time"]
    alone = [complete(client, prompt=p).choices[0].text for p in prompts]
    out = complete(client, prompt=prompts, n=2)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == [alone[0], alone[0], alone[1], alone[1]]
    singles = [complete(client, prompt=p) for p in prompts]
    assert out.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    sampled = chat(client, n=3, temperature=1.0, seed=5, max_tokens=12)
    assert len({c.message.content for c in sampled.choices}) > 1  # each choice its own seed
    again = chat(client, n=3, temperature=1.0, seed=5, max_tokens=12)
    assert [c.message.content for c in again.choices] == [
        c.message.content for c in sampled.choices
    ]


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_streaming_choices_logprobs_and_usage(live_server, engine_kind, route):
    client = live_server.client()
    kw = {"n": 2, "stream_options": {"include_usage": True}}
    echo = not _no_prompt_logprobs(engine_kind)
    if route == "chat":
        whole = chat(client, n=2, logprobs=True, top_logprobs=2)
        chunks = list(chat(client, stream=True, logprobs=True, top_logprobs=2, **kw))
        texts, logprobs = {0: "", 1: ""}, {0: [], 1: []}
        for c in chunks:
            for ch in c.choices:
                texts[ch.index] += ch.delta.content or ""
                logprobs[ch.index] += ch.logprobs.content if ch.logprobs else []
        for choice in whole.choices:
            assert texts[choice.index] == choice.message.content
            got = [e.logprob for e in logprobs[choice.index]]
            assert got == pytest.approx([e.logprob for e in choice.logprobs.content])
    else:
        whole = complete(client, n=2, echo=echo, logprobs=2)
        chunks = list(complete(client, stream=True, echo=echo, logprobs=2, **kw))
        texts, logprobs = {0: "", 1: ""}, {0: [], 1: []}
        for c in chunks:
            for ch in c.choices:
                texts[ch.index] += ch.text
                logprobs[ch.index] += ch.logprobs.token_logprobs if ch.logprobs else []
        for choice in whole.choices:
            assert texts[choice.index] == choice.text
            assert logprobs[choice.index] == pytest.approx(choice.logprobs.token_logprobs)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_tokenize_and_detokenize(live_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    post = lambda path, body: httpx.post(f"{live_server.url}{path}", json=body, headers=headers)  # noqa: E731
    out = post("/tokenize", {"model": BASE_ID, "prompt": PROMPT, "add_special_tokens": False})
    body = out.json()
    assert out.status_code == 200 and body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] == LIVE_CONTEXT
    assert post("/detokenize", {"tokens": body["tokens"]}).json() == {"prompt": PROMPT}
    chat_ids = post("/tokenize", {"messages": [{"role": "user", "content": PROMPT}]}).json()
    assert chat_ids["count"] > body["count"]  # the chat template's tokens
    assert post("/detokenize", {"tokens": [10**6]}).status_code == 400
    assert httpx.post(f"{live_server.url}/tokenize", json={"prompt": "x"}).status_code == 401
    assert "eos_token" in httpx.get(f"{live_server.url}/tokenizer_info", headers=headers).json()
