"""Structured outputs through the ``openai`` client: ``response_format`` and vLLM's ``guided_*``.

The tiny random model writes garbage tokens: every constrained answer that parses and
validates is the grammar's doing, not the model's.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from loradock.errors import QueueFullError, RequestError
from loradock.serving.engines.base import StructuredOutput
from tests.helpers.serving import BASE_ID

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
FLAGS = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
    },
    "required": ["ok", "tags"],
    "additionalProperties": False,
}
DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
ANSWERS = ["yes", "no", "maybe"]


def response_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}


# (name, extra body, check of the answer's text)
CONSTRAINTS = [
    ("person", {"response_format": response_format(PERSON)}, PERSON),
    ("flags", {"extra_body": {"guided_json": FLAGS}}, FLAGS),
    ("date", {"extra_body": {"guided_regex": DATE}}, DATE),
    ("choice", {"extra_body": {"guided_choice": ANSWERS}}, ANSWERS),
    ("free", {}, None),
]


def check(expected, text: str) -> None:
    if isinstance(expected, dict):
        jsonschema.validate(json.loads(text), expected)
    elif isinstance(expected, str):
        assert re.fullmatch(expected, text), text
    elif isinstance(expected, list):
        assert text in expected


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


def ask(client, model: str, i: int, extra: dict, *, stream: bool = False) -> tuple[str, str]:
    """(text, finish_reason) of one sampled chat (or completion, every third request)."""
    kw = dict(model=model, max_tokens=120, temperature=1.0, seed=i, **extra)
    if i % 3 == 2:  # completions take the same constraints
        kw = {k: v for k, v in kw.items() if k != "response_format"}
        if "response_format" in extra:
            kw["extra_body"] = {"response_format": extra["response_format"]}
        out = client.completions.create(prompt=f"Record {i}:", **kw)
        return out.choices[0].text, out.choices[0].finish_reason
    messages = [{"role": "user", "content": f"Describe record {i}."}]
    if stream:
        parts, reason = [], None
        for chunk in client.chat.completions.create(messages=messages, stream=True, **kw):
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                reason = choice.finish_reason or reason
        return "".join(parts), reason
    out = client.chat.completions.create(messages=messages, **kw)
    return out.choices[0].message.content, out.choices[0].finish_reason


@pytest.mark.slow
def test_constrained_answers_validate_in_mixed_batches(server):
    """60 requests at once: 3 adapters and the base, constrained and free rows sharing
    batches; every constrained answer ends by itself and validates."""
    client = server.client()
    models = [BASE_ID, *server.published.adapters[:3]]
    jobs = [(models[i % 4], i, CONSTRAINTS[i % len(CONSTRAINTS)]) for i in range(60)]

    def run(job):
        model, i, (name, extra, expected) = job
        return name, expected, *ask(client, model, i, extra, stream=i % 7 == 0)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, jobs))
    for name, expected, text, reason in results:
        if expected is None:
            continue
        assert reason == "stop", (name, text)
        check(expected, text)
    free = [text for name, _, text, _ in results if name == "free"]
    assert any(not _parses(text) for text in free)  # unconstrained rows stay garbage


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_json_object_is_json_or_cut_short(server):
    client = server.client()
    for seed in range(4):
        out = client.chat.completions.create(
            model=BASE_ID,
            messages=[{"role": "user", "content": "JSON please"}],
            response_format={"type": "json_object"},
            max_tokens=60,
            temperature=1.0,
            seed=seed,
        )
        text, reason = out.choices[0].message.content, out.choices[0].finish_reason
        assert text.startswith("{")
        if reason == "stop":
            assert isinstance(json.loads(text), dict)


DEEP = {"type": "object", "properties": {}}
_level = DEEP
for _ in range(40):
    _level["properties"]["x"] = {"type": "object", "properties": {}}
    _level = _level["properties"]["x"]
HUGE = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}


@pytest.mark.parametrize(
    "body, words",
    [
        ({"response_format": response_format({"type": "nonsense"})}, "cannot be compiled"),
        ({"response_format": response_format([1, 2])}, "JSON schema object"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "'schema'"),
        ({"response_format": response_format(DEEP)}, "levels deep"),
        ({"response_format": response_format(HUGE)}, "characters"),
        ({"guided_regex": "(("}, "cannot be compiled"),
        ({"guided_choice": []}, "non-empty list"),
        ({"guided_json": "{not json"}, "not valid JSON"),
        ({"guided_regex": "a+", "guided_choice": ["a"]}, "at most one"),
        ({"guided_grammar": "root ::= 'a'"}, "guided_grammar"),
        ({"guided_choice": ["a"], "min_tokens": 2}, "min_tokens"),
    ],
)
def test_bad_constraints_are_400(server, body, words):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=BASE_ID,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            extra_body=body,
        )
    # vLLM compiles with its own messages: the HTTP layer's checks read the same everywhere.
    if server.kind != "vllm" or words != "cannot be compiled":
        assert words in str(caught.value)


def test_hostile_schemas_do_not_hold_up_others(server):
    """Deep and huge schemas sent alongside a well-formed request: they are refused, it is
    answered."""
    client = server.client()
    hostile = [response_format(DEEP), response_format(HUGE)] * 4

    def refused(fmt) -> int:
        try:
            client.chat.completions.create(
                model=BASE_ID,
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=8,
                response_format=fmt,
            )
        except openai.BadRequestError as exc:
            return exc.status_code
        return 200

    with ThreadPoolExecutor(9) as pool:
        statuses = pool.map(refused, hostile)
        good = pool.submit(ask, client, server.published.adapters[0], 0, CONSTRAINTS[0][1])
        text, reason = good.result()
    assert set(statuses) == {400}
    assert reason == "stop"
    check(PERSON, text)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from loradock.tiny import make_tiny_tokenizer

    return make_tiny_tokenizer()


def grammars(tokenizer, **kw):
    from loradock.serving.engines.peft.grammar import GrammarCache

    return GrammarCache(tokenizer, vocab_size=len(tokenizer), stop_ids={2}, **kw)


SPECS = [
    StructuredOutput("json", json.dumps(PERSON)),
    StructuredOutput("regex", DATE),
    StructuredOutput("choice", choices=tuple(ANSWERS)),
]


@pytest.mark.parametrize(
    "asked, compiled, hits",
    [
        ([0, 0, 0], 1, 2),  # the same schema compiles once
        ([0, 1, 2], 3, 0),
        ([0, 1, 2, 0], 4, 0),  # two kept: the first was evicted
        ([0, 1, 0, 2, 0], 3, 2),  # used again: kept over the older one
    ],
)
def test_compiled_grammars_are_a_bounded_lru(tiny_tokenizer, asked, compiled, hits):
    cache = grammars(tiny_tokenizer, max_entries=2)

    async def ask_all():
        for i in asked:
            await cache.get(SPECS[i])

    asyncio.run(ask_all())
    cache.close()
    assert (cache.stats["compiled"], cache.stats["hits"]) == (compiled, hits)


@pytest.fixture
def slow_grammars(tiny_tokenizer, monkeypatch):
    """A cache whose compiles take 0.6 s, with a 0.2 s limit; its vocabulary already read."""
    from loradock.serving.engines.peft import grammar

    compile_now = grammar._compile

    def slow(tools, spec):
        time.sleep(0.6)
        return compile_now(tools, spec)

    monkeypatch.setattr(grammar, "_compile", slow)
    cache = grammars(tiny_tokenizer, compile_timeout_s=0.2)
    cache._compiler.result()
    yield cache
    cache.close()


def test_a_slow_compile_is_refused_and_remembered(slow_grammars):
    for _ in range(2):  # the second time at once, from memory
        with pytest.raises(RequestError, match="did not compile within"):
            asyncio.run(slow_grammars.get(SPECS[0]))
    assert slow_grammars.stats["refused"] == 1


def test_a_compile_queued_behind_a_slow_one_is_retried_not_refused(slow_grammars):
    async def both():
        slow = asyncio.ensure_future(slow_grammars.get(SPECS[0]))
        await asyncio.sleep(0.05)  # SPECS[0] holds the compile thread
        with pytest.raises(QueueFullError, match="retry"):
            await slow_grammars.get(SPECS[1])
        with pytest.raises(RequestError):
            await slow
        # SPECS[1] was left queued, not refused: once the thread is past it, it is cached.
        await asyncio.wrap_future(slow_grammars._pool.submit(lambda: None))
        return await slow_grammars.get(SPECS[1])

    assert asyncio.run(both()) is not None
    assert slow_grammars.stats["refused"] == 1


def test_tools_reach_a_template_that_takes_them(tiny_tokenizer):
    from loradock.serving.http.tools import Tool, plan_tools, prompt_ids

    tiny_tokenizer.chat_template = "{{ tools | tojson }}{{ messages[0]['content'] }}"
    tool = Tool.model_validate({"type": "function", "function": {"name": "lookup_city"}})
    plan = plan_tools([tool], None, tiny_tokenizer)
    ids = prompt_ids(tiny_tokenizer, [{"role": "user", "content": "hi"}], plan)
    assert "lookup_city" in tiny_tokenizer.decode(ids)


@pytest.mark.parametrize(
    "schema, pattern",
    [
        ({"type": "string", "maxLength": 3}, "{0,3}$"),
        ({"type": "string", "minLength": 2}, "{2,}$"),
        ({"type": "string"}, None),  # unbounded: xgrammar's own rule refuses controls
        ({"type": "string", "maxLength": 3, "pattern": "^a+$"}, "^a+$"),
    ],
)
def test_vllm_bounded_strings_refuse_controls(schema, pattern):
    from loradock.serving.engines.vllm.structured import JSON_CHAR, bounded_strings

    nested = bounded_strings({"type": "object", "properties": {"x": schema}})["properties"]["x"]
    assert "maxLength" not in nested or pattern == "^a+$"
    got = nested.get("pattern")
    assert (got is None) if pattern is None else got.endswith(pattern)
    if got is not None and pattern != "^a+$":
        assert re.fullmatch(got.strip("^$"), 'a\\"b' if "3" in pattern else "ab")
        assert got.startswith("^" + JSON_CHAR)
        assert not re.fullmatch(got.strip("^$"), "a\x01")
