"""Hostile requests against a live server: each gets its refusal (status and message), no
message shows a folder of the server, the server stays up, and a well-formed request from
another client, sent at the same moment, is served meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import httpx
import pytest

from loradock.serving.http.prompts import INLINE_TOKENIZE_CHARS
from tests.helpers.processes import free_port, server_process
from tests.helpers.serving import (
    ADMIN_KEY,
    API_KEY,
    BASE_ID,
    LIVE_CONTEXT,
    publish_fixture_registry,
    start_server,
)

ADAPTER = "acme/adapter-001"
FILES = f"/v1/registry/adapters/{ADAPTER}/files"
CONTEXT = LIVE_CONTEXT  # every server's max_model_len here, the live ones' too
LIMIT = 2 * 1024 * 1024  # the default max_request_bytes
MB = 1024 * 1024


def _completion(**extra) -> dict:
    return {"model": ADAPTER, "prompt": "Hello", "max_tokens": 4, **extra}


def _chat(messages: list, **extra) -> dict:
    return {"model": ADAPTER, "messages": messages, "max_tokens": 4, **extra}


def _user(content, n: int = 1) -> list:
    return [{"role": "user", "content": content}] * n


# (id, how, method, path, body, key, status, fragment of the answer)
# how: "json" (a JSON body), "bytes" (raw bytes), "chunked" (no length), "lying" (a declared
# length and no body at all)
CASES = [
    # bodies: refused from the headers, or as soon as a chunked body passes the limit
    ("big-body", "bytes", "POST", "/v1/completions", b"x" * (3 * MB), API_KEY, 413, "too large"),
    ("big-body-no-key", "bytes", "POST", "/v1/completions", b"x" * (3 * MB), None, 401, "Missing"),
    ("big-body-wrong-key", "bytes", "POST", "/v1/completions", b"x" * (3 * MB), "sk-wrong-key-0123456789", 401, "Invalid API key"),
    ("big-chunked", "chunked", "POST", "/v1/completions", b"x" * (3 * MB), API_KEY, 413, "chunked"),
    ("declared-terabyte", "lying", "POST", "/v1/completions", 10**12, API_KEY, 413, "1000000000000 bytes"),
    ("admin-big-body", "bytes", "POST", "/v1/adapters/load", b"x" * (3 * MB), ADMIN_KEY, 413, "too large"),
    # fields: bounded in the schema, or against the context before any tokenising
    ("prompt-chars", "json", "POST", "/v1/completions", _completion(prompt="a" * (CONTEXT * 32 + 1)), API_KEY, 400, "characters"),
    ("prompt-ceiling", "json", "POST", "/v1/completions", _completion(prompt="a" * 1_000_001), API_KEY, 400, "at most 1000000"),
    ("message-chars", "json", "POST", "/v1/chat/completions", _chat(_user("a" * (CONTEXT * 32 + 1))), API_KEY, 400, "characters"),
    ("many-messages", "json", "POST", "/v1/chat/completions", _chat(_user("hi", 1025)), API_KEY, 400, "at most 1024"),
    ("many-parts", "json", "POST", "/v1/chat/completions", _chat(_user([{"type": "text", "text": "a"}] * 65)), API_KEY, 400, "at most 64"),
    ("many-stops", "json", "POST", "/v1/completions", _completion(stop=list("abcde")), API_KEY, 400, "at most 4 stop"),
    ("long-stop", "json", "POST", "/v1/completions", _completion(stop=["x" * 201]), API_KEY, 400, "at most 200"),
    ("max-tokens-huge", "json", "POST", "/v1/completions", _completion(max_tokens=10**9), API_KEY, 400, "over this server's context"),
    ("chat-max-tokens", "json", "POST", "/v1/chat/completions", _chat(_user("hi"), max_tokens=CONTEXT + 1), API_KEY, 400, f"max_tokens={CONTEXT + 1}"),
    ("seed-2**64", "json", "POST", "/v1/completions", _completion(seed=2**64), API_KEY, 400, "seed"),
    ("seed-negative", "json", "POST", "/v1/completions", _completion(seed=-1), API_KEY, 400, "seed"),
    ("temperature-1e-40", "json", "POST", "/v1/completions", _completion(temperature=1e-40), API_KEY, 400, "0 (greedy) or at least"),
    ("temperature-nan", "bytes", "POST", "/v1/completions", b'{"model": "acme/adapter-001", "prompt": "Hello", "temperature": NaN}', API_KEY, 400, "temperature"),
    ("temperature-big", "json", "POST", "/v1/completions", _completion(temperature=50), API_KEY, 400, "temperature"),
    ("nested-json", "bytes", "POST", "/v1/completions", b"[" * 100_000 + b"]" * 100_000, API_KEY, 400, "error parsing the body"),
    # names: refused whole, never trimmed, never a path, never fetched from outside the index
    ("name-newline", "json", "POST", "/v1/completions", _completion(model=ADAPTER + "\n"), API_KEY, 400, "whitespace"),
    ("name-space", "json", "POST", "/v1/completions", _completion(model=" " + ADAPTER), API_KEY, 400, "whitespace"),
    ("name-tab", "json", "POST", "/v1/chat/completions", _chat(_user("hi"), model="acme/\tadapter-001"), API_KEY, 400, "whitespace"),
    ("name-nul", "json", "POST", "/v1/completions", _completion(model=ADAPTER + "\x00"), API_KEY, 400, "control"),
    ("alias-newline", "json", "POST", "/v1/completions", _completion(model=ADAPTER + "@prod\n"), API_KEY, 400, "whitespace"),
    ("name-absolute", "json", "POST", "/v1/completions", _completion(model="/etc/passwd"), API_KEY, 400, "file path"),
    ("name-dotdot", "json", "POST", "/v1/completions", _completion(model="acme/../../etc"), API_KEY, 400, "file path"),
    ("name-home", "json", "POST", "/v1/completions", _completion(model="~/.ssh/id_rsa"), API_KEY, 400, "file path"),
    ("name-backslash", "json", "POST", "/v1/completions", _completion(model="C:\\x\\adapter"), API_KEY, 400, "file path"),
    ("not-indexed", "json", "POST", "/v1/completions", _completion(model="acme/other-base-lora"), API_KEY, 404, "not served here"),
    ("any-repo", "json", "POST", "/v1/completions", _completion(model="evil/sixty-megabytes"), API_KEY, 404, "--any-registry-adapter"),
    ("card-not-indexed", "json", "GET", "/v1/registry/adapters/evil/x/card", None, API_KEY, 404, "not in this server's index"),
    # files a card links: only files of an indexed repo's revision, never a path or a page
    ("files-dotdot", "json", "GET", f"{FILES}/..%2F..%2F..%2Fetc%2Fpasswd", None, API_KEY, 400, "not a file path"),
    ("files-dot-segment", "json", "GET", f"{FILES}/a/%2E%2E/%2E%2E/README.md", None, API_KEY, 400, "not a file path"),
    ("files-absolute", "json", "GET", f"{FILES}//etc/passwd.txt", None, API_KEY, 400, "not a file path"),
    ("files-backslash", "json", "GET", f"{FILES}/..%5C..%5Cetc%5Cpasswd.txt", None, API_KEY, 400, "not a file path"),
    ("files-hidden", "json", "GET", f"{FILES}/.loradock-snapshot.json", None, API_KEY, 400, "not a file path"),
    ("files-svg", "json", "GET", f"{FILES}/plot.svg", None, API_KEY, 400, "only images and text"),
    ("files-html", "json", "GET", f"{FILES}/index.html", None, API_KEY, 400, "only images and text"),
    ("files-weights", "json", "GET", f"{FILES}/adapter_model.safetensors", None, API_KEY, 400, "only images and text"),
    ("files-missing", "json", "GET", f"{FILES}/training_loss.png", None, API_KEY, 404, "has no file"),
    ("files-bad-revision", "json", "GET", f"{FILES}/README.md?revision=..%2F..", None, API_KEY, 400, "not a sha"),
    ("files-not-indexed", "json", "GET", "/v1/registry/adapters/evil/x/files/a.png", None, API_KEY, 404, "not in this server's index"),
    ("files-no-key", "json", "GET", f"{FILES}/README.md", None, None, 401, "Missing API key"),
    # open endpoints: keys first, docs off, /health without details
    ("docs-off", "json", "GET", "/docs", None, API_KEY, 404, "Not Found"),
    ("openapi-off", "json", "GET", "/openapi.json", None, API_KEY, 404, "Not Found"),
    ("redoc-no-key", "json", "GET", "/redoc", None, None, 401, "Missing API key"),
    ("unknown-route-no-key", "json", "GET", "/v1/secret", None, None, 401, "Missing API key"),
    ("models-no-key", "json", "GET", "/v1/models", None, None, 401, "Missing API key"),
    ("admin-with-api-key", "json", "POST", "/v1/adapters/load", {"model": ADAPTER}, API_KEY, 403, "admin key"),
]  # fmt: skip


@pytest.fixture(scope="module")
def started(published):
    server, app = start_server("peft", published, max_model_len=CONTEXT, max_batch_size=8)
    try:
        yield server.url, app
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(started) -> str:
    return started[0]


def _headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _hostile(url: str, how: str, method: str, path: str, body, key) -> tuple[int, str]:
    if how == "lying":
        return await _declared_length_only(url, path, body, key)
    headers = {**_headers(key), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        if how == "json":
            content = None if body is None else json.dumps(body).encode()
        elif how == "chunked":

            async def pieces(data=body):
                for i in range(0, len(data), 64 * 1024):
                    yield data[i : i + 64 * 1024]

            content = pieces()
        else:
            content = body
        resp = await client.request(method, path, content=content, headers=headers)
        return resp.status_code, resp.text


async def _declared_length_only(url: str, path: str, length: int, key) -> tuple[int, str]:
    """Headers that announce ``length`` bytes; not one byte of body is sent."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {length}\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    answer = (await asyncio.wait_for(reader.read(), timeout=30)).decode()
    writer.close()
    status_line, _, rest = answer.partition("\r\n")
    return int(status_line.split()[1]), rest


async def _good(url: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        resp = await client.post(
            "/v1/completions",
            json={"model": ADAPTER, "prompt": "Hello", "max_tokens": 3, "temperature": 0},
            headers=_headers(API_KEY),
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["usage"]["completion_tokens"]


@pytest.mark.parametrize(
    ("how", "method", "path", "body", "key", "status", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_hostile_request_is_refused_while_others_are_served(
    server, published, how, method, path, body, key, status, fragment
):
    async def both():
        return await asyncio.gather(_hostile(server, how, method, path, body, key), _good(server))

    (got, text), tokens = asyncio.run(both())
    assert got == status, text[:500]
    assert fragment in text, text[:500]
    assert tokens >= 1  # the other client was served meanwhile
    for folder in (str(published.root), tempfile.gettempdir()):
        assert folder not in text, text[:500]  # no server folder in any answer
    assert httpx.get(f"{server}/health", timeout=10).json()["status"] == "ok"


OTHER_ENGINE_CASES = (
    "big-chunked", "prompt-chars", "temperature-1e-40", "seed-2**64", "name-newline",
    "not-indexed",
)  # fmt: skip


@pytest.mark.parametrize("engine_kind", ["peft-process", "vllm"], indirect=True)
@pytest.mark.parametrize(
    ("how", "method", "path", "body", "key", "status", "fragment"),
    [c[1:] for c in CASES if c[0] in OTHER_ENGINE_CASES],
    ids=[c[0] for c in CASES if c[0] in OTHER_ENGINE_CASES],
)
def test_other_engines_refuse_the_same(live_server, how, method, path, body, key, status, fragment):
    async def both():
        url = live_server.url
        return await asyncio.gather(_hostile(url, how, method, path, body, key), _good(url))

    (got, text), tokens = asyncio.run(both())
    assert (got, tokens >= 1) == (status, True), text[:500]
    assert fragment in text, text[:500]


@pytest.mark.parametrize(
    ("chars", "off_loop"), [(40, False), (INLINE_TOKENIZE_CHARS, False), (3000, True)]
)
def test_long_prompts_are_tokenised_off_the_event_loop(started, monkeypatch, chars, off_loop):
    url, app = started
    frontend = app.state.loradock.engine.frontend
    threads = []

    def encode(request, encode=frontend.encode):
        threads.append(threading.current_thread().name)
        return encode(request)

    monkeypatch.setattr(frontend, "encode", encode)
    body = {"model": ADAPTER, "prompt": "ab " * (chars // 3) + "a" * (chars % 3), "max_tokens": 2}
    httpx.post(f"{url}/v1/completions", json=body, headers=_headers(API_KEY), timeout=60)
    loop_thread = "uvicorn"  # BackgroundServer's thread runs the event loop
    assert threads and (set(threads) != {loop_thread}) is off_loop, threads


@pytest.mark.parametrize(
    ("key", "details"), [(None, False), ("sk-wrong-key-0123456789", False), (API_KEY, True)]
)
def test_health_details_need_a_key(server, key, details):
    resp = httpx.get(f"{server}/health", headers=_headers(key), timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert ("loaded_adapters" in body) is details and ("base" in body) is details


@pytest.fixture(scope="module")
def served_process(tmp_path_factory, serving_base):
    """``loradock serve`` in its own process, as a user runs it, its key read from a file."""
    root = tmp_path_factory.mktemp("security-home")
    publish_fixture_registry(root, serving_base, serving_base.parent / "adapter", n=1)
    key_file = root / "api-key"
    key_file.write_text(API_KEY + "\n")
    port = free_port()
    env = {**os.environ, "LORADOCK_HOME": str(root), "HF_HUB_OFFLINE": "1"}
    env.pop("LORADOCK_API_KEY", None)
    args = ["serve", "--base", BASE_ID, "--port", str(port), "--dtype", "float32",
            "--threads", "1", "--max-model-len", "128", "--api-key-file", str(key_file)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = root / "serve.log"
    cmd = [sys.executable, "-m", "loradock.cli", *args]
    with server_process(cmd, ready_url=f"{url}/health", log=log, env=env):
        yield url


def test_health_answers_while_a_50mb_body_is_refused(served_process):
    """The upload is read up to the limit, refused, and never parsed; /health keeps answering
    meanwhile. The latencies are printed (and recorded in docs/security.md), never asserted:
    timings depend on the machine."""
    url = served_process
    result: list[tuple[int, str]] = []

    def upload() -> None:
        def pieces():
            for _ in range(50 * 16):  # 50 MB in 64 KiB pieces, chunked: no length to refuse
                yield b"x" * (64 * 1024)

        with httpx.Client(base_url=url, timeout=60) as client:
            resp = client.post("/v1/completions", content=pieces(), headers=_headers(API_KEY))
            result.append((resp.status_code, resp.text))

    def ask(client: httpx.Client, latencies: list[float]) -> None:
        start = time.perf_counter()
        resp = client.get("/health")
        latencies.append(time.perf_counter() - start)
        assert resp.status_code == 200 and resp.json() == {"status": "ok"}  # no key: no details
        time.sleep(0.005)

    idle: list[float] = []
    during: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            ask(client, idle)
        sender = threading.Thread(target=upload)
        sender.start()
        while sender.is_alive():
            ask(client, during)
        sender.join()
    (status, text) = result[0]
    assert status == 413 and "too large" in text, text[:300]
    assert during, "/health was not asked during the upload"
    print(
        f"\n/health idle: median {statistics.median(idle) * 1e3:.1f} ms; during a refused "
        f"50 MB upload: {len(during)} answers, median {statistics.median(during) * 1e3:.1f} ms, "
        f"max {max(during) * 1e3:.1f} ms"
    )
