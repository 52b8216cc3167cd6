"""The held-out evaluation a job runs after training."""

from __future__ import annotations

from dataclasses import dataclass

from loradock.training.config_checks import check_positive, raise_problems


@dataclass
class EvalSettings:
    """Held-out evaluation after training: greedy task metric and perplexity, base vs adapter."""

    enabled: bool = True
    limit: int | None = 100
    max_new_tokens: int = 40
    batch_size: int = 16

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.limit is not None:
            check_positive(problems, "eval.limit", self.limit)
        check_positive(problems, "eval.max_new_tokens", self.max_new_tokens)
        check_positive(problems, "eval.batch_size", self.batch_size)
        raise_problems("eval settings", problems)
