"""Tool calling through the ``openai`` client: forced calls constrained by the tool's schema,
``auto`` only where the chat template knows tools, tool messages accepted in the input."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from loradock.serving.http.tools import ToolPlan, plan_tools, tool_calls
from tests.helpers.serving import BASE_ID

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Paris", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "clock", "parameters": TIME}},
]
SCHEMAS = {"weather": WEATHER, "clock": TIME}
NAMED = {"type": "function", "function": {"name": "weather"}}
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris", "days": 1}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "user", "content": "And Oslo?"},
]


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


def chat(client, **kw):
    kw.setdefault("messages", [{"role": "user", "content": "Weather in Paris?"}])
    kw.setdefault("max_tokens", 100)
    return client.chat.completions.create(model=BASE_ID, temperature=1.0, tools=TOOLS, **kw)


@pytest.mark.parametrize(
    "tool_choice, names",
    [(NAMED, {"weather"}), ("required", {"weather", "clock"})],
)
@pytest.mark.parametrize("messages", [None, HISTORY])
def test_forced_calls_follow_the_schema(server, tool_choice, names, messages):
    """One call each (``parallel_tool_calls`` false): a random model's array of up to 8 may
    not end within ``max_tokens``."""
    client = server.client()
    extra = {} if messages is None else {"messages": messages}
    for seed in range(3):
        out = chat(
            client, tool_choice=tool_choice, seed=seed, parallel_tool_calls=False, **extra
        ).choices[0]
        assert out.finish_reason == "tool_calls"
        assert out.message.content is None and len(out.message.tool_calls) == 1
        for call in out.message.tool_calls:
            assert call.type == "function" and call.id.startswith("call_")
            assert call.function.name in names
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_forced_call_streams_in_openai_shape(server):
    chunks = list(chat(server.client(), tool_choice=NAMED, seed=1, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [call for d in deltas for call in d.tool_calls or ()]
    assert [c.index for c in calls] == [0]
    assert calls[0].function.name == "weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_answers_in_text(server):
    out = chat(server.client(), tool_choice="none", max_tokens=8).choices[0]
    assert out.message.tool_calls is None and out.message.content is not None
    assert out.finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    "kw, words",
    [
        ({}, "no tool support"),  # auto, the default with tools: ChatML has none
        ({"tool_choice": "auto"}, "no tool support"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not one of"),
        ({"tool_choice": "sometimes"}, "tool_choice must be"),
        ({"tool_choice": NAMED, "response_format": {"type": "json_object"}}, "without"),
        ({"tool_choice": NAMED, "messages": [{"role": "tool", "content": "{}"}]}, "tool_call_id"),
        ({"tool_choice": NAMED, "messages": [{"role": "user"}]}, "needs content"),
    ],
)
def test_tool_requests_refused(server, kw, words):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(server.client(), **kw)
    assert words in str(caught.value)


AUTO, REQUIRED = ToolPlan("auto", (), None), ToolPlan("required", (), None)


@pytest.mark.parametrize(
    "plan, text, content, calls",
    [
        (
            REQUIRED,
            '[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]',
            None,
            [("f", {"a": 1}), ("g", {})],
        ),
        (REQUIRED, '[{"name": "f", "argu', '[{"name": "f", "argu', []),  # cut by max_tokens
        (AUTO, "plain answer", "plain answer", []),
        (
            AUTO,
            '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>',
            None,
            [("f", {"a": 1})],
        ),
        (
            AUTO,
            'Let me check. <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
            '<tool_call>{"name": "g", "arguments": {"b": "x"}}</tool_call>',
            "Let me check.",
            [("f", {}), ("g", {"b": "x"})],
        ),
        (AUTO, "<tool_call>{broken</tool_call>", "<tool_call>{broken</tool_call>", []),
    ],
)
def test_calls_parsed_from_the_answer(plan, text, content, calls):
    got_content, got = tool_calls(plan, text)
    assert got_content == content
    assert [(c.function.name, json.loads(c.function.arguments)) for c in got] == calls


def test_auto_allowed_with_a_tool_template():
    class Tokenizer:
        chat_template = "{% if tools %}{{ tools | tojson }}{% endif %}"

    from loradock.serving.http.tools import Tool

    plan = plan_tools([Tool.model_validate(t) for t in TOOLS], None, Tokenizer())
    assert plan.mode == "auto" and plan.structured is None
