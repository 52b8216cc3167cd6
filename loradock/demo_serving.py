"""The demo's serving steps: an endpoint started as a process, and the same prompts asked of
several models through the ``openai`` client, answers side by side.

- ``ask_side_by_side``: the base and every adapter, hot-swapped on one endpoint;
- ``ask_merged``: the promoted ``dates`` adapter's merged weights, served alone (``loradock
  serve --merged``), against the hot-swapped adapter's answers to the same prompts;
- ``run_space``: the Gradio Space against the endpoint.

The questions go out together (a thread each): the endpoint batches them across adapters, as
it does for the many clients of a real deployment.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loradock.errors import LoradockError

console = Console()

TASKS = ("dates", "extraction")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list[str], *, env: dict[str, str], url: str, name: str, timeout: float):
    """Start ``cmd``, wait until ``url`` answers 200, yield, then stop it."""
    import httpx

    log = Path(env["LORADOCK_HOME"]) / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise LoradockError(
                    f"{name} exited with status {proc.returncode} before it was ready; "
                    f"its log is {log}:\n{log.read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise LoradockError(
                    f"{name} did not answer {url} within {timeout:.0f} s; see {log}"
                )
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def task_prompts(task: str, n: int) -> list[dict[str, str]]:
    data = Path(__import__("loradock.training", fromlist=["x"]).__file__).parent / "data"
    rows = []
    with (data / task / "test.jsonl").open() as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


def greedy_answer(client: Any, model: str, prompt: str) -> str:
    """``model``'s greedy reply to ``prompt`` (48 tokens at most): the demo compares these."""
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=48,
        temperature=0,
    )
    return (reply.choices[0].message.content or "").strip()


def _ask_all(client: Any, questions: list[tuple[str, str]]) -> list[str]:
    """Greedy answers to ``(model, prompt)`` pairs, asked at once, in the order given."""
    with ThreadPoolExecutor(max_workers=min(len(questions), 32) or 1) as pool:
        return list(pool.map(lambda q: greedy_answer(client, *q), questions))


def ask_side_by_side(api_url: str, api_key: str, result: Any, *, n: int) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=api_url, api_key=api_key, max_retries=0, timeout=120)
    for task in TASKS:
        models = [result.base] + [r for r in result.adapters if task in r]
        if task in result.prod:
            models.append(result.prod[task])  # the promoted adapter, asked for by its alias
        table = Table(title=f"{task}: the same prompts, base against adapters", show_lines=True)
        table.add_column("prompt", max_width=40)
        table.add_column("expected")
        for m in models:
            table.add_column(m.split("/")[-1])
        rows = task_prompts(task, n)
        texts = iter(_ask_all(client, [(m, r["instruction"]) for r in rows for m in models]))
        for row in rows:
            answers = [next(texts) for _ in models]
            for model, text in zip(models, answers, strict=True):
                result.answers.append(
                    {
                        "task": task,
                        "id": row["id"],
                        "model": model,
                        "answer": text,
                        "prompt": row["instruction"],
                        "expected": row["answer"],
                        "correct": text == row["answer"].strip(),
                    }
                )
            # the task instruction is the same on every row: show only the input line
            table.add_row(row["instruction"].splitlines()[-1], row["answer"], *answers)
        console.print(table)


def serve_merged_command(merged: str, port: int, *, small: bool) -> list[str]:
    """``loradock serve --merged``: vLLM, or the PEFT engine in the small demo (CI), where
    vLLM's start-up would cost more than the rest of the demo. It computes in the dtype the
    hot-swap endpoint picked for this machine (``auto``: bf16 only where the CPU has bf16
    instructions), so the two differ only by the merge."""
    from loradock.modeling import pick_dtype

    dtype = str(pick_dtype()).removeprefix("torch.")
    cmd = [sys.executable, "-m", "loradock.cli", "serve", "--merged", merged, "--port", str(port)]
    return [*cmd, "--dtype", dtype, *(["--engine", "peft"] if small else [])]


def ask_merged(api_url: str, api_key: str, result: Any, merged: str) -> None:
    """Ask the merged model the prompts the hot-swapped adapter answered; both side by side."""
    from openai import OpenAI

    client = OpenAI(base_url=api_url, api_key=api_key, max_retries=0, timeout=300)
    # the promoted adapter's answers to the dates prompts (an adapter promoted for both tasks
    # answered the extraction prompts too)
    hot = [a for a in result.answers if (a["model"], a["task"]) == (result.prod["dates"], "dates")]
    table = Table(title="dates: hot-swapped adapter against its merged weights", show_lines=True)
    for col in ("prompt", "expected", f"{result.prod['dates']} (hot-swap)", "merged", "same"):
        table.add_column(col, max_width=40)
    texts = _ask_all(client, [(merged, row["prompt"]) for row in hot])
    for row, text in zip(hot, texts, strict=True):
        same = text == row["answer"]
        result.merged_answers.append({**row, "model": merged, "answer": text, "same": same})
        same_text = "yes" if same else "no"
        table.add_row(
            row["prompt"].splitlines()[-1], row["expected"], row["answer"], text, same_text
        )
    console.print(table)


def run_space(config: Any, env: dict[str, str], result: Any, api_key: str) -> None:
    """Start the Space against the endpoint; stay up until Ctrl-C with ``keep_running``."""
    space_port = config.space_port or free_port()
    result.space_url = f"http://127.0.0.1:{space_port}/"
    # the Space asks with the API key; the admin key stays with the server
    space_env = {k: v for k, v in env.items() if k != "LORADOCK_ADMIN_KEY"}
    space_env["LORADOCK_ENDPOINT"] = result.api_url
    space_app = Path(__import__("loradock.spaces", fromlist=["x"]).__file__).parent
    space_cmd = [
        sys.executable, str(space_app / "app.py"), "--endpoint", result.api_url,
        "--host", "127.0.0.1", "--port", str(space_port),
    ]  # fmt: skip
    with running(space_cmd, env=space_env, url=result.space_url, name="space", timeout=180):
        console.print(f"[bold green]Space running at {result.space_url}[/]")
        console.print(f"endpoint: {result.api_url} (api key {api_key!r})")
        if config.keep_running:
            console.print("Ctrl-C stops the server and the Space.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)


@contextlib.contextmanager
def serving_endpoint(config: Any, env: dict[str, str], result: Any) -> Iterator[None]:
    """The multi-adapter endpoint (``loradock serve``) on ``result.api_url`` while in the block."""
    api_port = config.api_port or free_port()
    result.api_url = f"http://127.0.0.1:{api_port}/v1"
    serve_cmd = [
        sys.executable, "-m", "loradock.cli", "serve", "--base", result.base,
        "--port", str(api_port), "--max-loaded", "4",
    ]  # fmt: skip
    health = f"http://127.0.0.1:{api_port}/health"
    with running(serve_cmd, env=env, url=health, name="server", timeout=300):
        yield


def serve_and_show(
    config: Any,
    env: dict[str, str],
    registry: Any,
    result: Any,
    steps: Any,
    api_key: str,
) -> None:
    """Steps 6 to 8, with the endpoint up: its adapters asked side by side, the merged weights
    served alone, the Space."""
    from loradock.demo_merge import merge_promoted_adapter

    steps.start(6, "one endpoint, many adapters: the openai client asks each")
    ask_side_by_side(result.api_url, api_key, result, n=config.prompts_per_task)

    engine = "the PEFT engine" if config.small else "vLLM"
    steps.start(7, f"the best dates adapter merged into its base, served by {engine}")
    merged = merge_promoted_adapter(registry, result, result.prod["dates"])
    port = free_port()
    with running(
        serve_merged_command(merged, port, small=config.small), env=env,
        url=f"http://127.0.0.1:{port}/health", name="merged-server", timeout=900,
    ):  # fmt: skip
        ask_merged(f"http://127.0.0.1:{port}/v1", api_key, result, merged)

    steps.start(8, "the Gradio Space for reviewers")
    if config.space:
        run_space(config, env, result, api_key)
