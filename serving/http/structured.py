"""A request's output constraint: ``response_format`` or vLLM's ``guided_*`` fields, checked.

OpenAI's ``response_format`` (``text``, ``json_object``, ``json_schema``) and vLLM's
extensions ``guided_json``, ``guided_regex`` and ``guided_choice`` become one engine-neutral
``StructuredOutput``; at most one of them per request. Every size is bounded here, before any
engine compiles anything: a schema's JSON text and nesting depth, a regex's length, the number
and length of choices. A hostile schema is thus a 400 in microseconds; what passes these
bounds still has a compile-time limit in the engine (``engines/peft/grammar.py``).
"""

from __future__ import annotations

import json
from typing import Any

from loradock.errors import RequestError
from loradock.serving.engines.base import StructuredOutput

MAX_SCHEMA_CHARS = 32_768  # a schema's JSON text
MAX_SCHEMA_DEPTH = 32  # objects and arrays nested in a schema
MAX_REGEX_CHARS = 2_048
MAX_CHOICES = 256
MAX_CHOICE_CHARS = 1_024
FIELDS = ("response_format", "guided_json", "guided_regex", "guided_choice")


def structured_of(body: Any) -> StructuredOutput | None:
    """The body's output constraint (None without one); ``RequestError`` when it is bad."""
    given = [name for name in FIELDS if getattr(body, name, None) is not None]
    if len(given) > 1:
        raise RequestError(f"{' and '.join(given)}: send at most one output constraint")
    if not given:
        return None
    name = given[0]
    value = getattr(body, name)
    if name == "response_format":
        spec = _response_format(value)
    elif name == "guided_json":
        spec = json_schema(_parsed(value, name), name)
    elif name == "guided_regex":
        spec = regex(value, name)
    else:
        spec = choices(value, name)
    check_min_tokens(body, spec)
    return spec


def check_min_tokens(body: Any, spec: StructuredOutput | None) -> None:
    """``min_tokens`` forbids the end a constrained answer may need sooner: refused together."""
    if spec is not None and getattr(body, "min_tokens", 0):
        raise RequestError(
            "min_tokens cannot be combined with an output constraint: the constraint decides "
            "where the answer ends"
        )


def _response_format(value: dict[str, Any]) -> StructuredOutput | None:
    kind = value.get("type")
    extra = sorted(set(value) - {"type", "json_schema"})
    if extra:
        raise RequestError(f"response_format: unknown field(s) {', '.join(extra)}")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutput("json")
    if kind != "json_schema":
        raise RequestError(
            f"response_format.type={kind!r}: one of 'text', 'json_object', 'json_schema'"
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise RequestError("response_format.json_schema must be an object with a 'schema'")
    unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if unknown:
        raise RequestError(f"response_format.json_schema: unknown field(s) {', '.join(unknown)}")
    name = spec.get("name")
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= 64):
        raise RequestError("response_format.json_schema.name must be 1 to 64 characters")
    if spec.get("strict") not in (None, True, False):
        raise RequestError("response_format.json_schema.strict must be true or false")
    return json_schema(spec["schema"], "response_format.json_schema.schema")


def _parsed(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > MAX_SCHEMA_CHARS:
        raise RequestError(f"{where} has {len(value)} characters: at most {MAX_SCHEMA_CHARS}")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise RequestError(f"{where} is not valid JSON: {exc}") from None


def json_schema(schema: Any, where: str) -> StructuredOutput:
    """A JSON schema (an object, or ``true``) as a constraint, its size and depth bounded."""
    if schema is True:
        schema = {}
    if not isinstance(schema, dict):
        raise RequestError(f"{where} must be a JSON schema object")
    depth = nesting(schema)
    if depth > MAX_SCHEMA_DEPTH:
        raise RequestError(f"{where} is nested {depth} levels deep: at most {MAX_SCHEMA_DEPTH}")
    text = json.dumps(schema, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_SCHEMA_CHARS:
        raise RequestError(f"{where} has {len(text)} characters: at most {MAX_SCHEMA_CHARS}")
    return StructuredOutput("json", text)


def nesting(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_SCHEMA_DEPTH:
                return deepest  # enough to refuse it
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def regex(pattern: Any, where: str) -> StructuredOutput:
    if not isinstance(pattern, str) or not pattern:
        raise RequestError(f"{where} must be a non-empty string")
    if len(pattern) > MAX_REGEX_CHARS:
        raise RequestError(f"{where} has {len(pattern)} characters: at most {MAX_REGEX_CHARS}")
    return StructuredOutput("regex", pattern)


def choices(values: Any, where: str) -> StructuredOutput:
    ok = isinstance(values, list) and all(isinstance(v, str) and v for v in values)
    if not ok or not values:
        raise RequestError(f"{where} must be a non-empty list of non-empty strings")
    if len(values) > MAX_CHOICES or max(map(len, values)) > MAX_CHOICE_CHARS:
        raise RequestError(
            f"{where}: at most {MAX_CHOICES} choices of at most {MAX_CHOICE_CHARS} characters"
        )
    return StructuredOutput("choice", choices=tuple(values))
