"""The PEFT engine on a CUDA GPU, served over HTTP as ``loradock serve`` runs it (the engine in its
own spawned process), driven by the real ``openai`` client.

Marked ``gpu``: skipped without a GPU. ``LORADOCK_GPU_TEST_DEVICE=cpu`` runs the same logic on a
CPU (to check the tests themselves on a machine without one).
"""

from __future__ import annotations

import pytest

from tests.helpers.gpu import gpu_test_device
from tests.helpers.serving import (
    BASE_ID,
    LiveServer,
    adapter_greedy_text,
    greedy_burst,
    start_server,
)

pytestmark = pytest.mark.gpu
DEVICE = gpu_test_device()
PROMPT = "Convert the date 3 March 2024 to ISO format:"


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def gpu_server(request, published):
    server, app = start_server(
        "peft-process",
        published,
        device=DEVICE,
        dtype=request.param,
        max_loaded=2,
        max_model_len=128,
        max_batch_size=16,
    )
    try:
        live = LiveServer(url=server.url, app=app, published=published, kind="peft-process")
        yield live, request.param
    finally:
        server.stop()


def test_greedy_text_matches_transformers_and_bursts_match_solo(gpu_server, serving_base):
    live, dtype = gpu_server
    client = live.client()
    names = [BASE_ID, *live.published.adapters[:4]]  # 4 adapters over 2 slots: evictions

    def solo(name: str):
        return client.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0)

    answers = {name: solo(name) for name in names}
    for out in answers.values():
        n, finish = out.usage.completion_tokens, out.choices[0].finish_reason
        assert (finish == "length" and n == 8) or (finish == "stop" and 0 < n < 8), out
    if dtype == "float32":
        # fp32 on the GPU says what transformers + PEFT say on the CPU (greedy, token for token).
        adapter = serving_base.parent / "adapter"  # what acme/adapter-000 was published from
        assert answers[BASE_ID].choices[0].text == adapter_greedy_text(
            serving_base, None, PROMPT, 8
        )
        assert answers["acme/adapter-000"].choices[0].text == adapter_greedy_text(
            serving_base, adapter, PROMPT, 8
        )
    texts = {answers[n].choices[0].text for n in names}
    assert len(texts) > 1, "base and adapters answered alike: the adapters were not applied"

    # Batched across adapters on the device, the same greedy text as one request at a time.
    for name, res in zip(names * 3, greedy_burst(live, names * 3, PROMPT), strict=True):
        assert res.choices[0].text == answers[name].choices[0].text, name


def test_streamed_chat_on_the_device(gpu_server):
    live, _ = gpu_server
    client = live.client()
    messages = [{"role": "user", "content": "Date: 3rd of March 2024"}]
    whole = client.chat.completions.create(
        model="dates", messages=messages, max_tokens=6, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="dates",
            messages=messages,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
