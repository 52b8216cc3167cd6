"""The model a job trains: its base, the base's quantization and the LoRA put on it."""

from __future__ import annotations

from dataclasses import dataclass

from loradock.training.config_checks import check_positive, raise_problems

QUANTIZATION_MODES = ("none", "nf4")
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class BaseModelConfig:
    """The base model: a registry name (``org/name[@rev]``) or a local model folder."""

    name: str
    revision: str | None = None
    dtype: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not self.name.strip():
            problems.append(f"base.name={self.name!r}: give a registry name or a model folder")
        if self.dtype not in DTYPES:
            problems.append(f"base.dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")
        raise_problems("base model config", problems)

    @property
    def reference(self) -> str:
        """The name handed to ``Registry.resolve_base`` (revision appended when given apart)."""
        if self.revision and "@" not in self.name:
            return f"{self.name}@{self.revision}"
        return self.name


@dataclass
class LoraSettings:
    """peft ``LoraConfig`` fields; ``target_modules`` is a list of names or ``all-linear``."""

    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    bias: str = "none"

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            problems.append(f"lora.r={self.r!r} must be an integer >= 1 (the adapter's rank)")
        check_positive(problems, "lora.lora_alpha", self.lora_alpha)
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            problems.append(f"lora.lora_dropout={self.lora_dropout!r} must be in [0, 1)")
        tm = self.target_modules
        if isinstance(tm, str):
            if tm != "all-linear":
                problems.append(
                    f"lora.target_modules={tm!r}: give a list of module names or 'all-linear'"
                )
        elif not tm or not all(isinstance(m, str) and m for m in tm):
            problems.append(f"lora.target_modules={tm!r} must be a non-empty list of names")
        if self.bias not in ("none", "all", "lora_only"):
            problems.append(f"lora.bias={self.bias!r} is not none, all or lora_only")
        raise_problems("LoRA settings", problems)

    def to_peft(self):
        from peft import LoraConfig

        tm = (
            self.target_modules
            if isinstance(self.target_modules, str)
            else list(self.target_modules)
        )
        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=tm,
            bias=self.bias,
            task_type="CAUSAL_LM",
        )


@dataclass
class QuantizationConfig:
    """``none`` (LoRA) or ``nf4`` (QLoRA: 4-bit NF4, double quantization; the 4-bit
    layers compute in the job's dtype: bf16 where the hardware has it, else fp32)."""

    mode: str = "none"

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZATION_MODES:
            raise_problems(
                "quantization config",
                [f"quantization.mode={self.mode!r} is not one of {', '.join(QUANTIZATION_MODES)}"],
            )

    @property
    def enabled(self) -> bool:
        return self.mode != "none"
