"""``EvalOptions``: every option of one eval run, validated when created.

Fields made with ``option()`` are also ``loradock eval`` options (flags and help written once,
here); the task lists and the row limit are parsed by the command itself (comma lists,
numbers or fractions). What lm-eval's own CLI passes through (``--num-fewshot``,
``--gen-kwargs``, ``--apply-chat-template``, ``--log-samples``, ``--seed``,
``--include-path``) means here what it means there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loradock.errors import ConfigError
from loradock.options import option

BACKENDS = ("hf", "endpoint", "vllm")
# Where no stderr exists (perplexities), a relative rise beyond this is flagged as forgetting.
DEFAULT_FORGETTING_THRESHOLD = 0.05
# Elsewhere an adapter regresses when it is worse than the base by more than this many
# combined standard errors (sqrt(se_base^2 + se_adapter^2)): about 95% one-sided at 2.
DEFAULT_FORGETTING_SIGMAS = 2.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(values: object) -> tuple[str, ...]:
    return tuple(str(v) for v in (values or ()))


@dataclass(frozen=True)
class EvalOptions:
    """Every option of one run, validated when created (all problems in one ConfigError)."""

    tasks: tuple[str, ...] = ()  # any lm-eval task, group or tag; () = the shipped tasks
    include_paths: tuple[Path, ...] = ()  # task folders, as lm-eval's --include_path
    forgetting: tuple[str, ...] = ()  # tasks/groups checked for forgetting (run too)
    limit: int | float | None = None
    backend: str = option("hf", "hf, endpoint or vllm")
    endpoint: str | None = option(None, "A running loradock server's URL")
    api_key: str | None = option(None, "Endpoint key", envvar="LORADOCK_API_KEY", repr=False)
    endpoint_base_name: str | None = option(
        None, "The endpoint's name for the base", "--served-base-name"
    )
    base: str | None = option(
        None, "Pin the base: org/name@rev or a folder (default: from the cards)"
    )
    data_dir: Path | None = option(None, "Shipped task data folder (<task>/test.jsonl)")
    tasks_dir: Path | None = None  # replaces the shipped task folder (tests, custom installs)
    batch_size: int = option(8, "Batch size (endpoint: requests in flight at once)")
    device: str | None = option(None, "cpu, cuda, mps (default: the best available)")
    dtype: str | None = option(None, "auto, float32, bfloat16")
    chat_template: bool | None = option(
        None,
        "Apply the tokenizer's chat template (default: when it has one)",
        "--apply-chat-template/--no-chat-template",
    )
    num_fewshot: int | None = option(
        None, "Few-shot examples per prompt (a task that fixes 0 keeps 0, as in lm-eval)"
    )
    gen_kwargs: str | None = option(
        None, "Generation arguments for generative tasks, e.g. 'max_gen_toks=64,temperature=0'"
    )
    log_samples: bool = option(False, "Keep every prompt and answer (raw/<target>.samples.jsonl)")
    seed: int = option(0, "Seed for Python, numpy, torch and few-shot sampling")
    bootstrap_iters: int = option(1000, "Bootstrap iterations for stderr (0: analytic only)")
    use_cache: bool = option(
        True, "Reuse cached model answers per model@sha", "--use-cache/--no-cache"
    )
    cache_dir: Path | None = option(
        None, "Request cache folder (default: $LORADOCK_HOME/eval-cache)"
    )
    forgetting_sigmas: float = option(
        DEFAULT_FORGETTING_SIGMAS, "Flag forgetting beyond this many combined stderrs"
    )
    forgetting_threshold: float = option(
        DEFAULT_FORGETTING_THRESHOLD,
        "Relative rise flagged where a metric has no stderr (perplexity)",
    )
    # Pairwise LLM-as-judge (off unless judge_endpoint is set): base vs each adapter.
    judge_endpoint: str | None = option(None, "OpenAI-compatible judge (off by default)")
    judge_model: str | None = option(None, "The judge's model name")
    judge_api_key: str | None = option(
        None, "Judge key", envvar="LORADOCK_JUDGE_API_KEY", repr=False
    )
    judge_prompts: Path | None = option(None, "Prompts for the judge (jsonl)")
    judge_limit: int | None = option(None, "Judge at most this many prompts")
    judge_max_tokens: int = field(default=128)  # each candidate's answer length

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", _names(self.tasks))
        object.__setattr__(self, "forgetting", _names(self.forgetting))
        paths = tuple(Path(p).expanduser() for p in self.include_paths or ())
        object.__setattr__(self, "include_paths", paths)
        problems = self._backend_problems() + self._number_problems()
        for name in ("data_dir", "tasks_dir"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_dir():
                problems.append(f"{name} {str(value)!r} is not a folder")
        problems += [f"--include-path {str(p)!r} is not a folder" for p in paths if not p.is_dir()]
        if problems:
            raise ConfigError("Invalid eval options", problems)

    def _backend_problems(self) -> list[str]:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "endpoint" and not self.endpoint:
            problems.append("backend 'endpoint' needs --endpoint URL (a running loradock serve)")
        if self.endpoint and self.backend != "endpoint":
            problems.append(f"--endpoint {self.endpoint!r} is only used with --backend endpoint")
        if self.judge_endpoint and self.backend != "endpoint":
            problems.append(
                "the judge compares answers served by --endpoint: use --backend endpoint with it"
            )
        if self.judge_endpoint and not self.judge_model:
            problems.append("--judge-endpoint needs --judge-model (the judge's model name)")
        return problems

    def _number_problems(self) -> list[str]:
        problems = []
        limit = self.limit
        if limit is not None and (
            isinstance(limit, bool)
            or not isinstance(limit, (int, float))
            or limit <= 0
            or (isinstance(limit, float) and limit > 1)
        ):
            problems.append(
                f"limit {limit!r} must be a positive number of rows per task (or a fraction <= 1)"
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            problems.append(f"batch_size {self.batch_size!r} must be an integer >= 1")
        if not _is_int(self.bootstrap_iters) or self.bootstrap_iters < 0:
            problems.append(f"bootstrap_iters {self.bootstrap_iters!r} must be an integer >= 0")
        if self.num_fewshot is not None and (not _is_int(self.num_fewshot) or self.num_fewshot < 0):
            problems.append(f"num_fewshot {self.num_fewshot!r} must be an integer >= 0")
        if not _is_int(self.seed):
            problems.append(f"seed {self.seed!r} must be an integer")
        if self.gen_kwargs is not None and not _gen_kwargs_ok(self.gen_kwargs):
            problems.append(
                f"gen_kwargs {self.gen_kwargs!r} must be key=value pairs separated by commas"
            )
        threshold = self.forgetting_threshold
        if not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
            problems.append(f"forgetting_threshold {threshold!r} must be a number in [0, 1)")
        sigmas = self.forgetting_sigmas
        if not isinstance(sigmas, (int, float)) or sigmas < 0:
            problems.append(f"forgetting_sigmas {sigmas!r} must be a number >= 0")
        return problems


def _gen_kwargs_ok(text: str) -> bool:
    """lm-eval's own parser reads ``k=v,k=v``; anything else would fail after models load."""
    pairs = [p for p in str(text).split(",") if p.strip()]
    return bool(pairs) and all("=" in p and p.split("=", 1)[0].strip() for p in pairs)
