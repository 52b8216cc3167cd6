"""The whole adapter lifecycle in one call, offline: what ``make demo`` runs.

1. import the base model into the local hub (SmolLM2-135M-Instruct; a tiny random model with
   ``small=True``);
2. train the two shipped task adapters (LoRA; ``dates`` also as QLoRA);
3. combine the ``dates`` and ``extraction`` LoRA adapters into one new adapter
   (``loradock merge``, ``loradock.demo_merge``);
4. start the multi-adapter endpoint and evaluate base, adapters and the combination through
   it with lm-eval, then write the report (the combination next to its sources on both tasks);
5. publish the results into the cards (new revisions), sync the registry and print adapters
   by base model and task, ranked by their metric;
6. ask each adapter and the base the same questions through the ``openai`` client, on the
   same endpoint, answers side by side (``loradock.demo_serving``);
7. merge the promoted ``dates`` adapter into its base's weights, serve them alone (vLLM; the
   PEFT engine with ``small=True``) and ask the same prompts, next to the hot-swapped answers;
8. start the Gradio Space on 127.0.0.1 and print its address.

Every step is skipped when its result is already there (same job, same evaluated revision,
same source weights), so a second run is much faster; each step's time is printed at the end.
This module composes the parts; it holds no logic of theirs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from loradock.demo_serving import TASKS, serve_and_show, serving_endpoint
from loradock.errors import ConfigError, LoradockError

console = Console()

SMALL_BASE = "local/tiny-base"
STEPS = 8
# Requests lm-eval keeps in flight at the endpoint in step 4: the engine's whole batch
# (``--max-batch-size``, 32), so one task's prompts are computed together.
EVAL_CONCURRENCY = 32


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
    combined: str | None = None  # the dates + extraction combination's repo id
    merged: dict[str, Any] = field(default_factory=dict)  # repo_id, sha, source, check
    merged_answers: list[dict[str, Any]] = field(default_factory=list)
    api_url: str | None = None
    space_url: str | None = None
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)


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


# -- step 4 ---------------------------------------------------------------------------------


def evaluate_adapters(
    registry: Any,
    result: DemoResult,
    *,
    report_dir: Path,
    limit: int,
    small: bool,
    api_key: str,
) -> None:
    """lm-eval through the running endpoint (``result.api_url``): the engine apps call
    batches each model's requests together, so the evaluation measures what they get."""
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
        endpoint=result.api_url,
        api_key=api_key,
        batch_size=EVAL_CONCURRENCY,
    )
    # Publishing the results made new card revisions: remember the adapters' shas (the
    # base's card got its own results too, which the leaderboard's base row shows).
    for published in run.published:
        if published.kind == "adapter":
            result.adapters[published.repo_id] = published.sha
    result.report = report_dir
    marker.write_text(json.dumps({"adapters": result.adapters, "limit": limit}))
    console.print(f"report: {report_dir / 'report.html'}")


# -- step 5 ---------------------------------------------------------------------------------


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


class _Steps:
    """The step headings, and how long each step took (printed at the end)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, k: int, title: str) -> None:
        self.stop()
        console.rule(f"[bold cyan]Step {k}/{STEPS}: {title}")
        self._current = (f"{k}. {title}", time.monotonic())

    def stop(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.seconds[name] = time.monotonic() - started
            self._current = None


def run_demo(config: DemoConfig | None = None) -> DemoResult:
    """Run every step; returns what it built, measured and answered."""
    from loradock.demo_merge import combine_task_adapters
    from loradock.registry.api import Registry

    config = config or DemoConfig()
    start, steps = time.monotonic(), _Steps()
    with _demo_env(config.home) as env:
        home = Path(env["LORADOCK_HOME"])
        registry = Registry.open()

        steps.start(1, "base model into the local hub")
        base = import_demo_base(registry, small=config.small)
        result = DemoResult(base=base)

        steps.start(2, "train the task adapters (LoRA, and QLoRA for dates)")
        train_adapters(registry, demo_jobs(small=config.small, base=base), result)

        steps.start(3, "merge: the dates and extraction adapters combined into one")
        combine_task_adapters(registry, result)

        steps.start(4, "evaluate base, adapters and the combination with lm-eval")
        api_key = f"demo-{secrets.token_urlsafe(18)}"
        # the keys travel in the environment, never on a command line that `ps` shows
        env = {**env, "LORADOCK_API_KEY": api_key, "LORADOCK_ADMIN_KEY": secrets.token_urlsafe(24)}
        # One endpoint from here on: lm-eval measures through it what apps then call.
        with serving_endpoint(config, env, result):
            limit = config.eval_limit or (4 if config.small else 50)
            evaluate_adapters(
                registry, result, report_dir=home / "report", limit=limit,
                small=config.small, api_key=api_key,
            )  # fmt: skip

            steps.start(5, "registry: adapters by base model and task, ranked")
            show_ranking(registry, result)

            serve_and_show(config, env, registry, result, steps, api_key)
    steps.stop()
    result.step_seconds = steps.seconds
    result.seconds = time.monotonic() - start
    for name, seconds in steps.seconds.items():
        console.print(f"{seconds:7.0f} s  step {name}")
    console.rule(f"[bold green]demo done in {result.seconds:.0f} s")
    return result
