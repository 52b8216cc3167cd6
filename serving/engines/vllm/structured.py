"""Our ``StructuredOutput`` as vLLM's ``StructuredOutputsParams`` (vLLM compiles it with its
own backend, xgrammar by default, as the PEFT engine does).

JSON is generated compact, as on the PEFT engine: no free whitespace for a model to repeat
until ``max_tokens`` (vLLM reads ``disable_any_whitespace`` engine-wide: ``args.py``).
xgrammar's bounded strings (``minLength``/``maxLength``) let raw control characters through,
which JSON forbids; the PEFT engine masks those tokens itself, and here such a string gets the
equivalent ``pattern`` instead (characters other than controls, quotes and backslashes, or
short escapes).
"""

from __future__ import annotations

import json
from typing import Any

from loradock.serving.engines.base import StructuredOutput


def vllm_structured(spec: StructuredOutput | None) -> Any:
    """vLLM's parameters for ``spec`` (None without one)."""
    if spec is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if spec.kind == "json":
        if not spec.value:
            return StructuredOutputsParams(json_object=True)
        schema = bounded_strings(json.loads(spec.value))
        return StructuredOutputsParams(json=json.dumps(schema))
    if spec.kind == "regex":
        return StructuredOutputsParams(regex=spec.value)
    return StructuredOutputsParams(choice=list(spec.choices))


JSON_CHAR = r'(?:[^\x00-\x1f"\\]|\\["\\/bfnrt])'  # one character of a JSON string


def bounded_strings(schema: Any) -> Any:
    """``schema`` with each length-bounded string (no pattern, format, enum or const of its
    own) given a pattern of JSON string characters of that length."""
    if isinstance(schema, list):
        return [bounded_strings(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bounded_strings(value) for key, value in schema.items()}
    bounded = "minLength" in out or "maxLength" in out
    own = {"pattern", "format", "enum", "const"} & set(out)
    if out.get("type") == "string" and bounded and not own:
        low, high = out.pop("minLength", 0), out.pop("maxLength", "")
        out["pattern"] = f"^{JSON_CHAR}{{{low},{high}}}$"
    return out
