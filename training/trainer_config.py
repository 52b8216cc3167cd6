"""The trl ``SFTConfig`` fields a job may set, under trl's own names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from loradock.training.config_checks import check_positive, raise_problems

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts")
PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")
REPORT_TO = ("none", "tensorboard")


@dataclass
class TrainerSettings:
    """The trl ``SFTConfig`` fields a job may set (same names; see :meth:`sft_kwargs`)."""

    max_length: int = 256
    # "auto": packed (bfd, padding-free) on an accelerator; on a CPU only when unpacked batches
    # would be mostly padding (decided from the data: loradock.training.packing).
    packing: bool | str = "auto"
    packing_strategy: str = "bfd"
    completion_only_loss: bool | None = None
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.05
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    bf16: bool | str = "auto"
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    report_to: list[str] | str = "none"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        for key in (
            "max_length",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
            "learning_rate",
        ):
            check_positive(problems, f"trainer.{key}", getattr(self, key))
        check_positive(problems, "trainer.warmup_steps", self.warmup_steps, allow_zero=True)
        check_positive(problems, "trainer.weight_decay", self.weight_decay, allow_zero=True)
        if self.max_steps == -1 or self.max_steps is None:
            check_positive(problems, "trainer.num_train_epochs", self.num_train_epochs)
        elif not isinstance(self.max_steps, int) or self.max_steps < 1:
            problems.append(f"trainer.max_steps={self.max_steps!r} must be -1 (use epochs) or >= 1")
        if self.eval_steps is not None:
            check_positive(problems, "trainer.eval_steps", self.eval_steps)
        if self.packing_strategy not in PACKING_STRATEGIES:
            problems.append(
                f"trainer.packing_strategy={self.packing_strategy!r} is not one of "
                f"{', '.join(PACKING_STRATEGIES)}"
            )
        if self.lr_scheduler_type not in SCHEDULERS:
            problems.append(
                f"trainer.lr_scheduler_type={self.lr_scheduler_type!r} is not one of "
                f"{', '.join(SCHEDULERS)}"
            )
        if self.packing not in (True, False, "auto"):
            problems.append(f"trainer.packing={self.packing!r} must be true, false or auto")
        if self.bf16 not in (True, False, "auto"):
            problems.append(f"trainer.bf16={self.bf16!r} must be true, false or auto")
        for target in [self.report_to] if isinstance(self.report_to, str) else self.report_to:
            if target not in REPORT_TO:
                problems.append(
                    f"trainer.report_to={target!r} is not one of {', '.join(REPORT_TO)}"
                )
        raise_problems("trainer settings", problems)

    @property
    def report_targets(self) -> list[str]:
        targets = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return [t for t in targets if t != "none"] or ["none"]

    def sft_kwargs(self, *, bf16: bool, packing: bool) -> dict[str, Any]:
        """Keyword arguments for ``trl.SFTConfig`` (``bf16`` already resolved for the hardware,
        ``packing`` resolved for the device and data: :func:`loradock.training.packing.decide_packing`)."""
        kwargs = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("bf16", "report_to", "eval_steps")
        }
        kwargs["bf16"] = bf16
        kwargs["packing"] = packing
        kwargs["report_to"] = self.report_targets
        if self.eval_steps is not None:
            kwargs["eval_steps"] = self.eval_steps
        return kwargs
