"""One eval run: targets resolved -> lm-eval on each -> typed results -> report (-> card + index).

``evaluate`` is what ``loradock eval`` calls. The base is always measured with its adapters,
in the same run and with the same tasks, so every delta in the report is like for like.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradock.errors import ConfigError, EvalError
from loradock.evals.backends import BACKENDS, EndpointBackend, InProcessBackend, VllmBackend
from loradock.evals.results import (
    EvalTarget,
    TargetResult,
    file_sha256,
    metrics_from_lm_eval,
)
from loradock.evals.targets import TargetPlan, resolve_targets
from loradock.evals.taskdir import TaskSpec, load_task_specs, materialize, select_tasks

log = logging.getLogger(__name__)

DEFAULT_FORGETTING_THRESHOLD = 0.05  # absolute drop in a general-capability accuracy


@dataclass(frozen=True)
class EvalOptions:
    """Every option of one run, validated when created (all problems in one ConfigError)."""

    tasks: tuple[str, ...] = ()
    limit: int | float | None = None
    backend: str = "hf"
    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    endpoint_base_name: str | None = None
    base: str | None = None
    data_dir: Path | None = None
    tasks_dir: Path | None = None
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    chat_template: bool | None = None
    bootstrap_iters: int = 1000
    forgetting_threshold: float = DEFAULT_FORGETTING_THRESHOLD
    seed: int = 0
    # Pairwise LLM-as-judge (off unless judge_endpoint is set): base vs each adapter.
    judge_endpoint: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = field(default=None, repr=False)
    judge_prompts: Path | None = None
    judge_limit: int | None = None
    judge_max_tokens: int = 128  # each candidate's answer length

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks or ()))
        problems: list[str] = []
        if self.backend not in BACKENDS:
            problems.append(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "endpoint" and not self.endpoint:
            problems.append("backend 'endpoint' needs --endpoint URL (a running loradock serve)")
        if self.endpoint and self.backend != "endpoint":
            problems.append(f"--endpoint {self.endpoint!r} is only used with --backend endpoint")
        if self.limit is not None and (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, (int, float))
            or self.limit <= 0
            or (isinstance(self.limit, float) and self.limit > 1)
        ):
            problems.append(
                f"limit {self.limit!r} must be a positive number of rows per task (or a fraction <= 1)"
            )
        if (
            not isinstance(self.batch_size, int)
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            problems.append(f"batch_size {self.batch_size!r} must be an integer >= 1")
        if not isinstance(self.bootstrap_iters, int) or self.bootstrap_iters < 0:
            problems.append(f"bootstrap_iters {self.bootstrap_iters!r} must be an integer >= 0")
        if (
            not isinstance(self.forgetting_threshold, (int, float))
            or not 0 <= self.forgetting_threshold < 1
        ):
            problems.append(
                f"forgetting_threshold {self.forgetting_threshold!r} must be a number in [0, 1)"
            )
        if self.judge_endpoint and self.backend != "endpoint":
            problems.append(
                "the judge compares answers served by --endpoint: use --backend endpoint with it"
            )
        if self.judge_endpoint and not self.judge_model:
            problems.append("--judge-endpoint needs --judge-model (the judge's model name)")
        for name in ("data_dir", "tasks_dir"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_dir():
                problems.append(f"{name} {str(value)!r} is not a folder")
        if problems:
            raise ConfigError("Invalid eval options", problems)


@dataclass
class EvalRun:
    """What one run measured: the base and each adapter, on the same tasks."""

    plan: TargetPlan
    tasks: list[TaskSpec]
    results: list[TargetResult]
    options: EvalOptions
    task_hashes: dict[str, str]
    report_dir: Path | None = None
    report_files: dict[str, Path] = field(default_factory=dict)
    published: list[Any] = field(default_factory=list)
    judged: list[Any] = field(default_factory=list)  # judge.JudgeResult per adapter

    @property
    def base(self) -> TargetResult:
        return self.results[0]

    @property
    def adapters(self) -> list[TargetResult]:
        return self.results[1:]


def _task_hashes(specs: Sequence[TaskSpec], include: Path) -> dict[str, str]:
    """A hash per task over its run-time YAML and its data: same hash, same measurement."""
    import hashlib

    out = {}
    for spec in specs:
        digest = hashlib.sha256((include / spec.yaml_path.name).read_bytes())
        for split in sorted(spec.data_files):
            digest.update(file_sha256(spec.data_files[split]).encode())
        out[spec.name] = digest.hexdigest()
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("loradock", "lm_eval", "transformers", "peft", "torch", "vllm"):
        try:
            out[package] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            continue
    return out


def _make_backend(options: EvalOptions, plan: TargetPlan):
    if options.backend == "endpoint":
        return EndpointBackend(
            url=options.endpoint or "",
            api_key=options.api_key,
            base_model_name=options.endpoint_base_name,
            chat=options.chat_template is not False,
        )
    if options.backend == "vllm":
        return VllmBackend(
            base_path=str(plan.base.path),
            adapters=plan.adapters,
            dtype=options.dtype,
            chat_template=options.chat_template,
        )
    return InProcessBackend(
        base_path=str(plan.base.path),
        device=options.device,
        dtype=options.dtype,
        batch_size=options.batch_size,
        chat_template=options.chat_template,
    )


def _http_errors() -> tuple[type[BaseException], ...]:
    """What lm-eval's API models raise when a server refuses or cannot be reached."""
    try:
        from requests import RequestException
    except ImportError:  # pragma: no cover - requests comes with lm-eval[api]
        return (ConnectionError,)
    return (RequestException, ConnectionError)


def _run_target(
    backend, target: EvalTarget, tasks: list[Any], task_manager, options
) -> dict[str, Any]:
    import lm_eval

    with backend.model_for(target) as (lm, chat):
        try:
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                # Without one, lm-eval indexes its thousands of built-in task YAMLs each call.
                task_manager=task_manager,
                limit=options.limit,
                bootstrap_iters=options.bootstrap_iters,
                log_samples=True,
                apply_chat_template=chat,
                random_seed=options.seed,
                numpy_random_seed=options.seed,
                torch_random_seed=options.seed,
                fewshot_random_seed=options.seed,
            )
        except _http_errors() as exc:
            raise EvalError(
                f"The endpoint failed while evaluating {target.label!r}: {exc}. Check --endpoint, "
                "--api-key and that the server serves this model."
            ) from exc
        except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:
            raise EvalError(f"lm-eval could not evaluate {target.label!r}: {exc}") from exc
    if raw is None:
        raise EvalError(f"lm-eval returned no results for {target.label!r}.")
    return raw


def evaluate(
    targets: Sequence[str],
    *,
    tasks: Sequence[str] | None = None,
    limit: int | float | None = None,
    report_dir: str | Path | None = None,
    endpoint: str | None = None,
    publish: bool = False,
    registry: Any = None,
    options: EvalOptions | None = None,
    **option_kwargs: Any,
) -> EvalRun:
    """Evaluate the base and adapters named by ``targets`` on ``tasks`` (all shipped by default).

    ``option_kwargs`` are :class:`EvalOptions` fields (``backend=``, ``api_key=``, ``base=``,
    ``data_dir=``, ...). With ``report_dir`` the Markdown/HTML report and lm-eval's raw JSON are
    written there; with ``publish`` every adapter's card gets the results as a new revision.
    """
    if options is None:
        if endpoint is not None:
            option_kwargs.setdefault("backend", "endpoint")
        options = EvalOptions(
            tasks=tuple(tasks or ()), limit=limit, endpoint=endpoint, **option_kwargs
        )
    specs_all = load_task_specs(options.tasks_dir, data_dir=options.data_dir)
    chosen = options.tasks
    if not chosen and options.backend == "endpoint":
        chosen = tuple(s.name for s in specs_all.values() if s.generative)
    specs = select_tasks(specs_all, chosen)

    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    plan = resolve_targets(list(targets), registry=registry, base=options.base)
    backend = _make_backend(options, plan)
    backend.check_tasks(specs)

    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="loradock-eval-tasks-") as tmp:
        include = materialize(specs, tmp)
        hashes = _task_hashes(specs, include)
        task_manager = TaskManager(include_path=str(include), include_defaults=False)
        by_name = {s.name: s for s in specs}
        try:
            # Built once (data sets read once) and reused for every target: lm-eval rebuilds
            # each task's requests per evaluate() call, so nothing leaks between models.
            loaded = list(task_manager.load([s.name for s in specs])["tasks"].values())
        except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:
            raise EvalError(f"lm-eval could not load the tasks {sorted(by_name)}: {exc}") from exc
        results: list[TargetResult] = []
        try:
            from tqdm.auto import tqdm

            bar = tqdm(plan.all, desc="eval targets", unit="model", disable=None)
            for target in bar:
                bar.set_postfix_str(target.label)
                log.info("evaluating %s on %s", target.label, ", ".join(by_name))
                raw = _run_target(backend, target, loaded, task_manager, options)
                samples = raw.pop("samples", {}) or {}
                raw["loradock"] = {
                    "target": {
                        "label": target.label,
                        "kind": target.kind,
                        "repo_id": target.repo_id,
                        "sha": target.sha,
                    },
                    "backend": backend.name,
                    "task_hashes": hashes,
                    "versions": _versions(),
                }
                results.append(
                    TargetResult(
                        target=target,
                        metrics=metrics_from_lm_eval(raw, by_name),
                        raw=raw,
                        samples=samples,
                    )
                )
        finally:
            backend.close()

    run = EvalRun(plan=plan, tasks=specs, results=results, options=options, task_hashes=hashes)
    if options.judge_endpoint:
        run.judged = _judge(run, backend)
    if report_dir is not None:
        from loradock.evals.report import write_report

        write_report(run, report_dir)
    if publish:
        from loradock.evals.publish import publish_results

        run.published = publish_results(run, registry=registry)
    return run


def _judge(run: EvalRun, backend: EndpointBackend) -> list[Any]:
    from loradock.evals.judge import JudgeClient, judge_pairwise, load_prompts

    o = run.options
    prompts = load_prompts(o.judge_prompts, limit=o.judge_limit)
    judge = JudgeClient(o.judge_endpoint or "", o.judge_model or "", o.judge_api_key)
    base = JudgeClient(backend.url, backend.served_name(run.base.target), o.api_key)
    return [
        judge_pairwise(
            prompts,
            candidate_a=base,
            candidate_b=JudgeClient(backend.url, backend.served_name(r.target), o.api_key),
            judge=judge,
            max_tokens=o.judge_max_tokens,
        )
        for r in run.adapters
    ]


def raw_json(result: TargetResult) -> str:
    """lm-eval's results for one target as JSON (non-JSON values such as dtypes as strings)."""
    from lm_eval.utils import handle_non_serializable

    return json.dumps(result.raw, indent=2, default=handle_non_serializable, ensure_ascii=False)
