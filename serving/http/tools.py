"""Tool calling: a chat request's ``tools`` and ``tool_choice`` -> prompt and output constraint;
the answer's text -> ``tool_calls``.

- ``tool_choice: "none"`` (or no tools): a plain answer.
- a named function (``{"type": "function", "function": {"name": ...}}``): the answer is that
  function's arguments, constrained by its ``parameters`` schema; one call.
- ``"required"``: the answer is a JSON array of ``{"name", "arguments"}`` objects, each
  constrained by its function's schema (``anyOf`` over the tools); one call per item.
- ``"auto"`` (the default with tools): the model decides, in the Hermes format its chat template
  teaches (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``), parsed from the text;
  a base whose chat template has no tool support gets a 400 saying so.

The tools are given to the chat template (``tools=``) when it supports them, so the model sees
them as it was trained to; the prompt is then rendered here and sent as token ids.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from loradock.errors import RequestError
from loradock.serving.engines.base import StructuredOutput
from loradock.serving.http.structured import check_min_tokens, json_schema

MAX_TOOLS = 64
MAX_CALLS = 8  # tool calls in one "required" answer
HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class FunctionDef(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=8_192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(ToolCall):
    index: int


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for this answer."""

    mode: Literal["auto", "required", "named"]
    tools: tuple[Tool, ...]
    structured: StructuredOutput | None  # the constraint a forced call puts on the output
    name: str | None = None  # the named function


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template reads ``tools`` (as Hermes-style templates do)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "tools" in template


def plan_tools(
    tools: list[Tool] | None, tool_choice: Any, tokenizer: Any, *, parallel: bool | None = None
) -> ToolPlan | None:
    """The request's tool plan (None: answer in text); ``RequestError`` when it cannot run.
    ``parallel`` False: a ``required`` answer holds exactly one call."""
    if tool_choice is not None and not tools and tool_choice != "none":
        raise RequestError("tool_choice is set but tools is empty: send the tools to choose from")
    if not tools or tool_choice == "none":
        return None
    if len(tools) > MAX_TOOLS:
        raise RequestError(f"{len(tools)} tools: at most {MAX_TOOLS}")
    tools = tuple(tools)
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "auto":
        if not template_supports_tools(tokenizer):
            raise RequestError(
                "tool_choice 'auto' lets the model decide in its chat template's tool format, "
                "and this model's chat template has no tool support: name a function in "
                "tool_choice, or use 'required'."
            )
        return ToolPlan("auto", tools, None)
    if choice == "required":
        items = [_call_schema(t.function) for t in tools]
        most = 1 if parallel is False else MAX_CALLS
        schema = {"type": "array", "minItems": 1, "maxItems": most, "items": {"anyOf": items}}
        return ToolPlan("required", tools, json_schema(schema, "tools"))
    name = _named(choice)
    match = [t for t in tools if t.function.name == name]
    if not match:
        raise RequestError(f"tool_choice names {name!r}, which is not one of the tools")
    params = match[0].function.parameters or {"type": "object"}
    return ToolPlan("named", tools, json_schema(params, f"tools[{name}].parameters"), name)


def _named(choice: Any) -> str:
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    raise RequestError(
        "tool_choice must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}'
    )


def _call_schema(function: FunctionDef) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": [function.name]},
            "arguments": function.parameters or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def template_tools(plan: ToolPlan | None, tokenizer: Any) -> list[dict[str, Any]] | None:
    """The tools as the chat template takes them (None when it takes none)."""
    if plan is None or not template_supports_tools(tokenizer):
        return None
    return [t.model_dump(exclude_none=True) for t in plan.tools]


def tool_calls(plan: ToolPlan, text: str) -> tuple[str | None, list[ToolCall]]:
    """The answer's text as (content, calls); the text stays content when it holds none."""
    if plan.mode == "named":
        return None, [ToolCall(function=FunctionCall(name=plan.name, arguments=text))]
    if plan.mode == "required":
        try:
            items = json.loads(text)
        except ValueError:  # cut short (max_tokens): no call to report
            return text, []
        return None, [_call(item) for item in items]
    calls = []
    for block in HERMES_CALL.findall(text):
        try:
            item = json.loads(block)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            calls.append(_call(item))
    if not calls:
        return text, []
    content = HERMES_CALL.sub("", text).strip()
    return content or None, calls


def _call(item: dict[str, Any]) -> ToolCall:
    arguments = item.get("arguments", {})
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(function=FunctionCall(name=item["name"], arguments=text))


def finish_reason(reason: str | None, calls: list[ToolCall]) -> str | None:
    """OpenAI's ``tool_calls`` for an answer that ended on its own with calls."""
    return "tool_calls" if calls and reason == "stop" else reason


def message_dict(message: Any) -> dict[str, Any]:
    """A request message as the chat template takes it (tool calls and results kept)."""
    out: dict[str, Any] = {"role": message.role, "content": message.text()}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _arguments(text: str) -> Any:
    """Templates render arguments as a mapping (Hermes: ``tojson``); text that is not JSON
    stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def chat_constraint(
    body: Any, plan: ToolPlan | None, own: StructuredOutput | None
) -> StructuredOutput | None:
    """The one output constraint of a chat: the body's own, or a forced tool call's."""
    forced = plan.structured if plan is not None else None
    if forced is not None and own is not None:
        raise RequestError(
            f"tool_choice {body.tool_choice!r} constrains the answer to a tool call: "
            "send it without response_format or guided_* fields"
        )
    check_min_tokens(body, forced)
    return forced or own


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]], plan: ToolPlan | None) -> Any:
    """The chat's token ids rendered with the tools (None when the template takes none: the
    engine's front end renders the messages as usual)."""
    listed = template_tools(plan, tokenizer)
    if listed is None:
        return None
    text = tokenizer.apply_chat_template(
        messages, tools=listed, tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]
