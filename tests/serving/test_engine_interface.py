"""Every engine implements the whole ``Engine`` interface, and every prompt is tokenised once
by the shared front end (the vLLM engine's run of the same prompts: test_vllm_engine.py)."""

from __future__ import annotations

import inspect

import pytest

from loradock.serving.config import ServerConfig
from loradock.serving.engines.base import Engine, GenerationRequest, SamplingParams
from loradock.serving.engines.frontend import PromptFrontend

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


def _members(protocol: type) -> list[str]:
    return [n for n in vars(protocol) if not n.startswith("_")] + list(protocol.__annotations__)


@pytest.mark.parametrize(
    ("options", "engine_class"),
    [
        ({"engine_process": False}, "PeftEngine"),
        ({"engine_process": True}, "ProcessEngine"),
        ({"engine": "vllm"}, "VllmEngine"),
    ],
)
def test_every_engine_implements_the_whole_interface(serving_base, options, engine_class):
    from loradock.serving.server import build_engine

    engine = build_engine(ServerConfig.from_options(base="tiny/base", **options), serving_base)
    assert type(engine).__name__ == engine_class
    assert isinstance(engine, Engine)  # runtime_checkable: every member is present
    cls = type(engine)
    for name in _members(Engine):
        declared = getattr(Engine, name, None)
        if inspect.iscoroutinefunction(declared):
            assert inspect.iscoroutinefunction(getattr(cls, name)), f"{engine_class}.{name}"
    assert inspect.isasyncgenfunction(cls.generate)
    assert engine.health() is None  # built and not started: nothing is wrong yet


def _request(prompt=None, messages=None) -> GenerationRequest:
    return GenerationRequest("r", prompt, SamplingParams(), messages=messages)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (_request(messages=MESSAGES), "chat"),
        (_request(prompt="Hello world"), "completion"),
    ],
    ids=["chat", "completion"],
)
def test_a_prompt_gets_exactly_one_bos(bos_base, request_, expected):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bos_base)
    bos = tok.bos_token_id
    if expected == "chat":
        text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        assert tok(text)["input_ids"][:2] == [bos, bos]  # what adding special tokens again does
        rendered = tok.apply_chat_template(
            MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=True
        )
        want = rendered["input_ids"]  # transformers' own tokenising of a chat: no extra tokens
    else:
        want = tok("Hello world")["input_ids"]
    ids = PromptFrontend(tok, max_model_len=128).encode(request_)
    assert ids == want and ids[0] == bos and ids.count(bos) == 1
