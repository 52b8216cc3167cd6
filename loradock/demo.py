"""The whole adapter lifecycle in one call, offline: what ``make demo`` runs.

1. import the base model into the local hub (SmolLM2-135M-Instruct; a tiny random model with
   ``small=True``);
2. train the two shipped task adapters (LoRA; ``dates`` also as QLoRA);
3. evaluate base and adapters with lm-eval and write the report;
4. publish the results into the cards (new revisions), sync the registry and print adapters
   by base model and task, ranked by their metric;
5. start the multi-adapter endpoint and ask each adapter and the base the same questions
   through the ``openai`` client, answers side by side;
6. start the Gradio Space on 127.0.0.1 and print its address.

Every step is skipped when its result is already there (same job, same evaluated revision),
so a second run is much faster. This module composes the parts; it holds no logic of theirs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from loradock.errors import ConfigError, LoradockError

console = Console()

SMALL_BASE = "local/tiny-base"
TASKS = ("dates", "extraction")
STEPS = 6


@dataclass(frozen=True)
class DemoConfig:
    """What the demo does; ``small`` is the reduced form CI runs (tiny model, a few steps)."""

    small: bool = False
    home: Path | None = None  # LORADOCK_HOME for the demo; default: the environment's
    api_port: int = 0  # 0: a free port
    space_port: int = 0
    keep_running: bool = False  # leave server + Space up until Ctrl-C
    eval_limit: int | None = None  # rows per task; default 50 (small: 4)
    prompts_per_task: int = 2
    space: bool = True

    def __post_init__(self) -> None:
        problems = []
        for name in ("api_port", "space_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 <= port < 65536:
                problems.append(f"{name} {port!r} must be a port number (0 picks a free one)")
        if self.eval_limit is not None and self.eval_limit < 1:
            problems.append(f"eval_limit {self.eval_limit!r} must be at least 1")
        if self.prompts_per_task < 1:
            problems.append(f"prompts_per_task {self.prompts_per_task!r} must be at least 1")
        if problems:
            raise ConfigError("Invalid demo options", problems)


@dataclass
class DemoResult:
    base: str
    adapters: dict[str, str] = field(default_factory=dict)  # repo id -> sha
    trained: list[str] = field(default_factory=list)  # repo ids trained this run
    reused: list[str] = field(default_factory=list)  # what an earlier run had already built
    report: Path | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    ranking: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    prod: dict[str, str] = field(default_factory=dict)  # task -> "org/name@prod"
    api_url: str | None = None
    space_url: str | None = None
    seconds: float = 0.0


def _step(k: int, title: str) -> None:
    console.rule(f"[bold cyan]Step {k}/{STEPS}: {title}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- step 1 ---------------------------------------------------------------------------------


def import_demo_base(registry: Any, *, small: bool) -> str:
    """Put the demo's base model into the store (a no-op when it is already there)."""
    if not small:
        from loradock.registry.base_import import import_base

        result = import_base("smollm2", registry=registry, progress=console.print)
        return result.repo_id
    with contextlib.suppress(LoradockError):
        registry.resolve_base(SMALL_BASE)
        console.print(f"{SMALL_BASE} already in the local hub")
        return SMALL_BASE
    import tempfile

    from loradock.registry.card import build_base_card
    from loradock.tiny import make_tiny_base

    with tempfile.TemporaryDirectory(prefix="loradock-tiny-") as tmp:
        folder = make_tiny_base(Path(tmp) / "model")
        card = build_base_card(
            license="apache-2.0",
            body="# tiny-base\n\nA random-weight Llama model built by `loradock.tiny` for tests "
            "and the reduced demo. It knows nothing; it exercises every code path.\n",
        )
        registry.publish_base(folder, SMALL_BASE, card=card, commit_message="Add tiny base")
    console.print(f"published {SMALL_BASE}")
    return SMALL_BASE


# -- step 2 ---------------------------------------------------------------------------------


def demo_jobs(*, small: bool, base: str) -> list[Any]:
    """The job configs the demo trains: shipped YAMLs, shrunk for the small demo."""
    from loradock.training.config import JobConfig

    jobs_dir = Path(__import__("loradock.training", fromlist=["x"]).__file__).parent / "jobs"
    names = ["dates-lora.yaml", "extraction-lora.yaml", "dates-qlora.yaml"]
    configs = []
    for name in names:
        data = yaml.safe_load((jobs_dir / name).read_text())
        if small:
            tiny = yaml.safe_load((jobs_dir / "tiny.yaml").read_text())
            shrunk = copy.deepcopy(tiny)
            shrunk["name"] = "tiny-" + data["name"]
            shrunk["data"]["task"] = data["data"]["task"]
            shrunk["publish"] = {
                "repo_id": data["publish"]["repo_id"].replace("smollm2", "tiny"),
                "task": data["publish"]["task"],
            }
            if "quantization" in data:
                shrunk["quantization"] = data["quantization"]
            data = shrunk
        data["base"] = {**(data.get("base") or {}), "name": base}
        configs.append(JobConfig.from_dict(data, base_dir=jobs_dir))
    return configs


def _already_trained(registry: Any, config: Any) -> str | None:
    """The sha of a published adapter trained from exactly this job, if there is one."""
    repo_id = config.publish.repo_id
    try:
        resolved = registry.resolve(repo_id)
    except LoradockError:
        return None
    from loradock.registry.local_paths import strip_local_paths

    training = resolved.card.training or {}
    # The card holds the job as published: plain JSON values, local paths cut to their names.
    job = strip_local_paths(json.loads(json.dumps(config.to_dict(), default=str)))
    same = json.dumps(training.get("job"), sort_keys=True) == json.dumps(job, sort_keys=True)
    return resolved.sha if same else None


def train_adapters(registry: Any, configs: list[Any], result: DemoResult) -> None:
    from loradock.training.job import run_job

    for i, config in enumerate(configs, 1):
        repo_id = config.publish.repo_id
        sha = _already_trained(registry, config)
        if sha:
            console.print(f"({i}/{len(configs)}) {repo_id}@{sha[:8]}: trained earlier, reused")
            result.reused.append(f"train:{repo_id}")
        else:
            console.print(f"({i}/{len(configs)}) training {config.name} -> {repo_id}")
            trained = run_job(config, registry=registry, progress=True)
            sha = trained.sha
            result.trained.append(repo_id)
            heldout = trained.metrics.get("heldout") or {}
            if heldout:
                console.print(f"    held-out: {json.dumps(heldout, default=str)[:300]}")
        result.adapters[repo_id] = sha


# -- step 3 ---------------------------------------------------------------------------------


def evaluate_adapters(
    registry: Any, result: DemoResult, *, report_dir: Path, limit: int, small: bool
) -> None:
    from loradock.evals.run import evaluate

    marker = report_dir / "evaluated.json"
    wanted = {"adapters": result.adapters, "limit": limit}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        console.print(f"report for these adapter revisions already at {report_dir}: reused")
        result.report = report_dir
        result.reused.append("eval")
        return
    tasks = [*TASKS, "general_mc"] if not small else list(TASKS)
    run = evaluate(
        list(result.adapters),
        tasks=tasks,
        limit=limit,
        report_dir=report_dir,
        publish=True,
        registry=registry,
    )
    # Publishing the results made new card revisions: remember those shas.
    for published in run.published:
        result.adapters[published.repo_id] = published.sha
    result.report = report_dir
    marker.write_text(json.dumps({"adapters": result.adapters, "limit": limit}))
    console.print(f"report: {report_dir / 'report.html'}")


# -- step 4 ---------------------------------------------------------------------------------


def show_ranking(registry: Any, result: DemoResult) -> None:
    report = registry.sync(progress=True)
    console.print(f"synced: {report}")
    for task in TASKS:
        metric = f"{task}/exact_match"
        rows = registry.search(base_model=result.base, task=task, sort=metric)
        table = Table(title=f"adapters for {task!r} on {result.base}, ranked by {metric}")
        for col in ("adapter", "revision", "rank", "aliases", metric):
            table.add_column(col)
        result.ranking[task] = []
        for row in rows:
            value = row.metrics.get(metric)
            table.add_row(
                row.repo_id,
                row.sha[:8],
                str(row.rank),
                ",".join(row.aliases),
                "-" if value is None else f"{value:.3f}",
            )
            result.ranking[task].append({"repo_id": row.repo_id, "sha": row.sha, metric: value})
        console.print(table)
        if rows:
            # The best adapter for the task becomes `prod`: apps ask for `org/name@prod` and
            # get whichever revision the team promoted, as with MLflow model aliases.
            best = rows[0]
            sha = registry.set_alias(best.repo_id, "prod", best.sha)
            result.prod[task] = f"{best.repo_id}@prod"
            console.print(f"alias: {best.repo_id}@prod -> {sha[:8]}")


# -- step 5 ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _process(cmd: list[str], *, env: dict[str, str], url: str, name: str, timeout: float):
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


def _test_prompts(task: str, n: int) -> list[dict[str, str]]:
    data = Path(__import__("loradock.training", fromlist=["x"]).__file__).parent / "data"
    rows = []
    with (data / task / "test.jsonl").open() as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


def ask_side_by_side(api_url: str, api_key: str, result: DemoResult, *, n: int) -> None:
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
        for row in _test_prompts(task, n):
            answers = []
            for model in models:
                reply = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": row["instruction"]}],
                    max_tokens=48,
                    temperature=0,
                )
                text = (reply.choices[0].message.content or "").strip()
                answers.append(text)
                result.answers.append(
                    {
                        "task": task,
                        "id": row["id"],
                        "model": model,
                        "answer": text,
                        "expected": row["answer"],
                        "correct": text == row["answer"].strip(),
                    }
                )
            # the task instruction is the same on every row: show only the input line
            table.add_row(row["instruction"].splitlines()[-1], row["answer"], *answers)
        console.print(table)


# -- the whole thing ------------------------------------------------------------------------


@contextlib.contextmanager
def _demo_env(home: Path | None) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    if home is not None:
        env["LORADOCK_HOME"] = str(home)
    env.setdefault("LORADOCK_HOME", str(Path("~/.cache/loradock").expanduser()))
    env["HF_HUB_OFFLINE"] = "1"  # the demo never reaches a hub
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_demo(config: DemoConfig | None = None) -> DemoResult:
    """Run every step; returns what it built, measured and answered."""
    from loradock.registry.api import Registry

    config = config or DemoConfig()
    start = time.monotonic()
    with _demo_env(config.home) as env:
        home = Path(env["LORADOCK_HOME"])
        registry = Registry.open()

        _step(1, "base model into the local hub")
        base = import_demo_base(registry, small=config.small)
        result = DemoResult(base=base)

        _step(2, "train the task adapters (LoRA, and QLoRA for dates)")
        train_adapters(registry, demo_jobs(small=config.small, base=base), result)

        _step(3, "evaluate base and adapters with lm-eval")
        limit = config.eval_limit or (4 if config.small else 50)
        evaluate_adapters(
            registry, result, report_dir=home / "report", limit=limit, small=config.small
        )

        _step(4, "registry: adapters by base model and task, ranked")
        show_ranking(registry, result)

        _step(5, "one endpoint, many adapters: the openai client asks each")
        api_port = config.api_port or _free_port()
        api_key = f"demo-{secrets.token_urlsafe(18)}"
        result.api_url = f"http://127.0.0.1:{api_port}/v1"
        serve_cmd = [
            sys.executable, "-m", "loradock.cli", "serve", "--base", base,
            "--port", str(api_port), "--max-loaded", "4",
        ]  # fmt: skip
        # the keys travel in the environment, never on a command line that `ps` shows
        keys = {"LORADOCK_API_KEY": api_key, "LORADOCK_ADMIN_KEY": secrets.token_urlsafe(24)}
        with _process(
            serve_cmd, env={**env, **keys}, url=f"http://127.0.0.1:{api_port}/health",
            name="server", timeout=300,
        ):  # fmt: skip
            ask_side_by_side(result.api_url, api_key, result, n=config.prompts_per_task)

            _step(6, "the Gradio Space for reviewers")
            if config.space:
                space_port = config.space_port or _free_port()
                result.space_url = f"http://127.0.0.1:{space_port}/"
                space_env = {**env, "LORADOCK_ENDPOINT": result.api_url,
                             "LORADOCK_API_KEY": api_key}  # fmt: skip
                space_app = Path(__import__("loradock.spaces", fromlist=["x"]).__file__).parent
                space_cmd = [
                    sys.executable, str(space_app / "app.py"), "--endpoint", result.api_url,
                    "--host", "127.0.0.1", "--port", str(space_port),
                ]  # fmt: skip
                with _process(
                    space_cmd, env=space_env, url=result.space_url, name="space", timeout=180
                ):
                    console.print(f"[bold green]Space running at {result.space_url}[/]")
                    console.print(f"endpoint: {result.api_url} (api key {api_key!r})")
                    if config.keep_running:
                        console.print("Ctrl-C stops the server and the Space.")
                        with contextlib.suppress(KeyboardInterrupt):
                            while True:
                                time.sleep(3600)
    result.seconds = time.monotonic() - start
    console.rule(f"[bold green]demo done in {result.seconds:.0f} s")
    return result
