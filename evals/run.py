"""One eval run: targets resolved -> lm-eval on each -> typed results -> report (-> card + index).

``evaluate`` is what ``loradock eval`` calls. The base is always measured with its adapters,
in the same run and with the same tasks, so every delta in the report is like for like.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradock.errors import EvalError
from loradock.evals.catalog import TaskInfo, TaskSelection, select_tasks
from loradock.evals.endpoint_backend import EndpointBackend
from loradock.evals.hf_backend import InProcessBackend
from loradock.evals.options import EvalOptions
from loradock.evals.request_cache import cache_prefix
from loradock.evals.results import EvalTarget, TargetResult, metrics_from_lm_eval
from loradock.evals.targets import TargetPlan, resolve_targets
from loradock.evals.vllm_backend import VllmBackend

log = logging.getLogger(__name__)


@dataclass
class EvalRun:
    """What one run measured: the base and each adapter, on the same tasks."""

    plan: TargetPlan
    tasks: list[TaskInfo]
    results: list[TargetResult]
    options: EvalOptions
    task_hashes: dict[str, str]  # task -> hash of its configs as run and its data
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
            concurrency=options.batch_size,
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
    """What lm-eval's API models raise when a server refuses or cannot be reached: requests'
    errors one request at a time, aiohttp's with concurrent requests."""
    try:
        from aiohttp import ClientError
        from requests import RequestException
    except ImportError:  # pragma: no cover - both come with lm-eval[api]
        return (ConnectionError,)
    return (RequestException, ClientError, ConnectionError)


def _run_target(
    backend, target: EvalTarget, selection: TaskSelection, options: EvalOptions, cache: str | None
) -> dict[str, Any]:
    import lm_eval

    with backend.model_for(target) as (lm, chat):
        try:
            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=selection.objects,
                # Without one, lm-eval indexes its thousands of built-in task YAMLs each call.
                task_manager=selection.manager,
                use_cache=cache,
                limit=options.limit,
                num_fewshot=options.num_fewshot,
                gen_kwargs=options.gen_kwargs,
                bootstrap_iters=options.bootstrap_iters,
                log_samples=options.log_samples,
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


def _served(backend: Any, target: EvalTarget) -> str:
    """What answers for ``target`` beyond its weights: an endpoint's URL and model name."""
    if isinstance(backend, EndpointBackend):
        return f"{backend.url} {backend.served_name(target)} chat={backend.chat}"
    return ""


def _measure(
    backend, plan: TargetPlan, selection: TaskSelection, options: EvalOptions
) -> list[TargetResult]:
    from tqdm.auto import tqdm

    infos = {i.name: i for i in selection.infos}
    results: list[TargetResult] = []
    bar = tqdm(plan.all, desc="eval targets", unit="model", disable=None)
    for target in bar:
        bar.set_postfix_str(target.label)
        log.info("evaluating %s on %s", target.label, ", ".join(infos))
        cache = cache_prefix(options, backend.name, target, plan.base, _served(backend, target))
        raw = _run_target(backend, target, selection, options, cache)
        samples = raw.pop("samples", {}) or {}
        metrics = metrics_from_lm_eval(raw, infos)
        raw["loradock"] = {
            "target": {
                "label": target.label,
                "kind": target.kind,
                "repo_id": target.repo_id,
                "sha": target.sha,
            },
            "backend": backend.name,
            "task_hashes": {m.task: m.task_hash for m in metrics},
            "versions": _versions(),
        }
        results.append(TargetResult(target=target, metrics=metrics, raw=raw, samples=samples))
    return results


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
    """Evaluate the base and adapters named by ``targets`` on ``tasks`` (the shipped ones by
    default; any lm-eval task, group or tag, or one of ``include_paths``).

    ``option_kwargs`` are :class:`EvalOptions` fields (``backend=``, ``api_key=``, ``base=``,
    ``data_dir=``, ...). Tasks and their data are loaded before any model. With ``report_dir``
    the Markdown/HTML report and lm-eval's raw JSON are written there; with ``publish`` every
    measured model's card (the base's too) gets its results as a new revision.
    """
    if options is None:
        if endpoint is not None:
            option_kwargs.setdefault("backend", "endpoint")
        options = EvalOptions(
            tasks=tuple(tasks or ()), limit=limit, endpoint=endpoint, **option_kwargs
        )
    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open()
    plan = resolve_targets(list(targets), registry=registry, base=options.base)
    backend = _make_backend(options, plan)
    with select_tasks(options) as selection:
        backend.check_tasks(selection.infos)
        try:
            results = _measure(backend, plan, selection, options)
        finally:
            backend.close()
    hashes = {m.task: m.task_hash or "" for m in results[0].metrics}
    run = EvalRun(
        plan=plan, tasks=selection.infos, results=results, options=options, task_hashes=hashes
    )
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
