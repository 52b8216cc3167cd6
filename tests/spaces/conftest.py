"""Fixtures of the Space's tests: a stand-in endpoint for fast tests, the real one for the browser."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from space_standin import LOSS_PLOT, create_standin, free_port, png_bytes, run_server

BASE = "tiny/base"
# (repo, task) published for the real-server tests; the last one is deleted after indexing.
REAL_ADAPTERS = [
    ("acme/dates-a", "dates"),
    ("acme/dates-b", "dates"),
    ("acme/extract-a", "extraction"),
    ("acme/gone", "extraction"),
]
REAL_KEY = "sk-space-own-key-0123456789"  # the Space's own key: the page must never show it


@pytest.fixture(scope="module")
def standin():
    """A stand-in endpoint (no API key) for the module's tests: (FastAPI app, URL)."""
    app = create_standin(token_delay=0.01)
    with run_server(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def standin_url(standin):
    return standin[1]


@pytest.fixture(scope="module")
def keyed_standin_url():
    """A stand-in endpoint that requires the API key ``sekret``."""
    with run_server(create_standin(api_key="sekret")) as url:
        yield url


@dataclass
class RealEndpoint:
    url: str
    key: str
    shas: dict[str, str]
    gone: str


@pytest.fixture(scope="module")
def real_endpoint(tmp_path_factory, tiny_base, tiny_adapter_factory):
    """``loradock serve`` (a subprocess, PEFT engine, tiny model) over a fresh local registry.

    Three adapters of ``tiny/base`` with eval results in their cards, plus ``acme/gone``:
    indexed, then deleted from the hub, as an adapter removed while the Space shows it. The
    first one's card links its loss plot, a file of the repo; the server wants ``REAL_KEY``.
    """
    from loradock.registry.api import Registry
    from loradock.registry.card import EvalMetric, build_adapter_card, build_base_card

    root = tmp_path_factory.mktemp("space-registry")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORADOCK_")}
    env["LORADOCK_HOME"] = str(root)
    env["LORADOCK_API_KEY"] = REAL_KEY
    old_home = os.environ.get("LORADOCK_HOME")
    os.environ["LORADOCK_HOME"] = str(root)  # Registry.open() reads the settings now
    try:
        registry = Registry.open()
        # The base's own general-capability score: the yardstick for forgetting.
        base_evals = [EvalMetric("general_mc", "loradock/general_mc", "acc", 0.55)]
        registry.publish_base(tiny_base, BASE, card=build_base_card().with_eval_results(base_evals))
        shas = {}
        for i, (repo, task) in enumerate(REAL_ADAPTERS):
            card = build_adapter_card(
                base_model=BASE,
                task=task,
                datasets=[f"loradock/{task}"],
                training={"r": 4, "seed": i + 1, "learning_rate": 2e-4},
                eval_results=[
                    EvalMetric(task, f"loradock/{task}", "exact_match", 0.2 + 0.1 * i),
                    EvalMetric("general_mc", "loradock/general_mc", "acc", 0.5 - 0.05 * i),
                ],
            )
            adapter = tiny_adapter_factory(seed=i + 1)
            aliases = ("prod",) if i == 0 else ()
            if i == 0:  # the factory's folders are shared: the plot goes into a copy
                adapter = shutil.copytree(adapter, root / "with-plot")
                (adapter / LOSS_PLOT).write_bytes(png_bytes())
                plot = f"\n![training loss]({LOSS_PLOT})\n"
                card = dataclasses.replace(card, body=card.body + plot)
            shas[repo] = registry.publish(adapter, repo, card=card, aliases=aliases).sha
        registry.index.close()
    finally:
        if old_home is None:
            os.environ.pop("LORADOCK_HOME", None)
        else:
            os.environ["LORADOCK_HOME"] = old_home
    shutil.rmtree(root / "hub" / "models" / "acme" / "gone")  # indexed, no longer in the hub

    port = free_port()
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("loradock")), "serve", "--base", BASE]
        + ["--port", str(port), "--dtype", "float32", "--max-model-len", "256"]
        # The engine in the server's process (one torch import, not two): the Space sees the
        # same HTTP either way, and the engine process has its own tests in tests/serving.
        + ["--in-process", "--threads", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"loradock serve exited: {(root / 'serve.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("loradock serve did not come up within 180s") from None
                time.sleep(0.5)
        yield RealEndpoint(url=url, key=REAL_KEY, shas=shas, gone="acme/gone")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
