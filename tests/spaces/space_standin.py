"""A small stand-in for a loradock endpoint: the routes the Space calls, with canned answers.

Answers depend on the model and the prompt (so side-by-side outputs differ and a test can
tell which panel got which model), stream as real SSE, and fail the way a real server
does: an OpenAI-shaped 404 for a model that is not served, 401 for a wrong key.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

BASE = "tiny/base"
ADAPTERS = {
    "acme/dates-r8": {
        "tasks": ["dates"],
        "metrics": {"dates/exact_match": 0.62, "general_mc/acc": 0.41},
    },
    "acme/dates-r16": {
        "tasks": ["dates"],
        "metrics": {"dates/exact_match": 0.71, "general_mc/acc": 0.35},
    },
    "acme/extract-r8": {
        "tasks": ["extraction"],
        "metrics": {"extraction/exact_match": 0.55, "extraction/field_accuracy": 0.8},
    },
    # In the registry but not servable: generation answers 404 ("adapter gone").
    "acme/gone": {"tasks": ["dates"], "metrics": {"dates/exact_match": 0.1}},
}
SHA = "a" * 40
OLD_SHA = "c" * 40
BASE_METRICS = {"dates/exact_match": 0.05, "general_mc/acc": 0.45}
LOSS_PLOT = "training_loss.png"
# The card's ``loradock:`` block as training/job.py writes it (a local output_dir included).
JOB_YAML = "name: dates-r8\nseed: 42\noutput_dir: /home/alice/runs/dates-r8\nlora:\n  r: 8\n"
TRAINING = {
    "job": {"name": "dates-r8", "seed": 42, "output_dir": "/home/alice/runs/dates-r8"},
    "job_yaml": JOB_YAML,
    "hyperparameters": {"lora": {"r": 8, "lora_alpha": 16}, "learning_rate": 0.0002},
    "seed": 42,
    "dataset": {"name": "loradock/dates", "format": "instruction", "sha256": "d" * 64},
    "base_model": {"id": BASE, "revision": "b" * 40},
    "libraries": {"torch": "2.5.1", "peft": "0.13.2", "transformers": "4.46.0"},
    "loss_plot": LOSS_PLOT,
}


def png_bytes(width: int = 240, height: int = 120) -> bytes:
    """A valid greyscale PNG of a falling curve on white: the card's stand-in loss plot."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    curve = [5 + int((height - 10) * (1 - 0.8 * 2.0 ** (-x / 30))) for x in range(width)]
    rows = []
    for y in range(height):
        pixels = bytes(0 if abs(y - curve[x]) <= 1 else 255 for x in range(width))
        rows.append(b"\x00" + pixels)  # filter byte 0, then one grey byte per pixel
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def canned_answer(model: str, prompt: str, seed: int | None = None) -> str:
    """Input-dependent: the model's short name, then the prompt's words reversed; a
    sampled request (a seed) ends with its seed, so it never equals the greedy answer."""
    words = prompt.split()[::-1][:12]
    sampled = [] if seed is None else [f"#{seed}"]
    return f"[{model.split('/')[-1]}] " + " ".join(words + sampled)


def _row(repo_id: str) -> dict:
    info = ADAPTERS[repo_id]
    return {
        "repo_id": repo_id,
        "sha": SHA,
        "kind": "adapter",
        "base_model": BASE,
        "base_revision": "b" * 40,
        "tasks": info["tasks"],
        "tags": ["peft", "lora"],
        "rank": 8,
        "datasets": [f"loradock/{info['tasks'][0]}"],
        "metrics": info["metrics"],
        "aliases": ["prod"] if repo_id.endswith("r16") else [],
        "is_latest": True,
    }


def _error(status: int, message: str, code: str) -> JSONResponse:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return JSONResponse(body, status_code=status)


def create_standin(*, api_key: str | None = None, token_delay: float = 0.0) -> FastAPI:
    app = FastAPI()
    app.state.chats = []  # every chat request's body, for tests to inspect
    served = {BASE} | {a for a in ADAPTERS if a != "acme/gone"}

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Invalid API key", "invalid_api_key")
        return await call_next(request)

    @app.get("/v1/models")
    async def models():
        data = [{"id": BASE, "object": "model", "parent": None}]
        data += [{"id": a, "object": "model", "parent": BASE} for a in sorted(served - {BASE})]
        return {"object": "list", "data": data}

    @app.get("/v1/registry/adapters")
    async def adapters(
        base: str | None = None, task: str | None = None, kind: str = "adapter", limit: int = 50
    ):
        if kind == "base":  # the base model's own row: its eval results are the yardstick
            row = {"repo_id": BASE, "sha": "b" * 40, "kind": "base", "tasks": []}
            return {"object": "list", "data": [row | {"metrics": BASE_METRICS}]}
        rows = [_row(a) for a in ADAPTERS]
        rows = [r for r in rows if (not base or r["base_model"] == base)]
        rows = [r for r in rows if (not task or task in r["tasks"])]
        return {"object": "list", "data": rows}

    @app.get("/v1/registry/adapters/{org}/{name}/card")
    async def card(org: str, name: str):
        repo_id = f"{org}/{name}"
        if repo_id not in ADAPTERS:
            return _error(404, f"Adapter {repo_id!r} is not in the registry", "model_not_found")
        row = _row(repo_id)
        # The real server's shape: the README (YAML front matter + body), revisions as
        # index rows and aliases beside it.
        card = (
            "---\n"
            f"base_model: {BASE}\n"
            f"base_model_revision: {row['base_revision']}\n"
            "base_model_relation: adapter\n"
            f"datasets:\n- {row['datasets'][0]}\n"
            f"loradock: {json.dumps(TRAINING)}\n"
            "---\n\n"
            f"# {repo_id}\n\nA LoRA adapter of `{BASE}` for {row['tasks'][0]}.\n\n"
            f"![training loss]({LOSS_PLOT})\n"
        )
        older = {k: round(v - 0.1, 4) for k, v in row["metrics"].items()}
        return {
            "repo_id": repo_id,
            "sha": SHA,
            "card": card,
            "revisions": [
                dict(row, sha=SHA),
                dict(row, sha=OLD_SHA, is_latest=False, metrics=older),
            ],
            "aliases": {"prod": SHA} if row["aliases"] else {},
        }

    # The card's own files by revision: the route the Space asks the server for.
    @app.get("/v1/registry/adapters/{org}/{name}/files/{path:path}")
    async def card_file(org: str, name: str, path: str, revision: str | None = None):
        if f"{org}/{name}" not in ADAPTERS or path != LOSS_PLOT or revision not in (None, SHA):
            return _error(404, f"No file {path!r} at {revision!r}", "not_found")
        return Response(png_bytes(), media_type="image/png")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.chats.append(body)
        model = body.get("model")
        if model not in served:
            return _error(404, f"The model {model!r} does not exist", "model_not_found")
        prompt = body["messages"][-1]["content"]
        seed = body.get("seed") if body.get("temperature", 1.0) > 0 else None
        tokens = canned_answer(model, prompt, seed).split(" ")[: int(body.get("max_tokens", 16))]
        if not body.get("stream"):
            text = " ".join(tokens)
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}

        async def events():
            created = int(time.time())
            for i, tok in enumerate(tokens):
                if token_delay:
                    await asyncio.sleep(token_delay)
                delta = {"content": tok if i == 0 else " " + tok}
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            end = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            yield f"data: {json.dumps(end)}\n\n"
            usage = {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(tokens),
                "total_tokens": len(prompt.split()) + len(tokens),
            }
            yield f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def run_server(app, *, port: int | None = None):
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1; yields the base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("stand-in server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
