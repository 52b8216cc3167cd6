"""A training job as typed config objects, one per concern, validated when created.

Each dataclass checks its own fields in ``__post_init__`` and raises one ``ConfigError`` listing
every problem; :meth:`JobConfig.from_dict` builds all sections, gathers their problems (and
unknown keys) and raises once for the whole file. Checks that need the outside world (the base
model, the data files, the output folder) live in :mod:`loradock.training.preflight`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loradock.errors import ConfigError

DATA_FORMATS = ("auto", "instruction", "messages", "prompt_completion", "text")
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
QUANTIZATION_MODES = ("none", "nf4")
DTYPES = ("auto", "bfloat16", "float16", "float32")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts")
PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")
REPORT_TO = ("none", "tensorboard")
HUB_DATASET_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _raise(section: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"Invalid {section}", problems)


def _positive(problems: list[str], name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        need = "a number >= 0" if allow_zero else "a number > 0"
        problems.append(f"{name}={value!r} must be {need}")


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
        _raise("base model config", problems)

    @property
    def reference(self) -> str:
        """The name handed to ``Registry.resolve_base`` (revision appended when given apart)."""
        if self.revision and "@" not in self.name:
            return f"{self.name}@{self.revision}"
        return self.name


@dataclass
class DataConfig:
    """Where the rows come from and how they are shaped.

    ``task`` picks a shipped data set (``training/data/<task>/``); ``train``/``validation``/
    ``test`` override its files or name any local jsonl/json/csv/parquet file. ``hub_id`` is a
    Hub data set, only usable when a Hub is reachable. Formats: our ``instruction`` rows
    (``instruction``/``answer``), conversational ``messages``, ``prompt_completion`` or ``text``.
    """

    task: str | None = None
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    hub_id: str | None = None
    format: str = "auto"
    max_train_rows: int | None = None
    max_eval_rows: int | None = None

    def __post_init__(self) -> None:
        from loradock.training.tasks import TASKS

        problems = []
        if self.task is not None and self.task not in TASKS:
            problems.append(f"data.task={self.task!r} is not a shipped task ({', '.join(TASKS)})")
        if self.task is None and self.train is None and self.hub_id is None:
            problems.append("data: give a shipped `task`, a `train` file or a Hub `hub_id`")
        if self.hub_id is not None and not HUB_DATASET_RE.fullmatch(str(self.hub_id)):
            problems.append(f"data.hub_id={self.hub_id!r} is not a Hub data set id (org/name)")
        if self.format not in DATA_FORMATS:
            problems.append(f"data.format={self.format!r} is not one of {', '.join(DATA_FORMATS)}")
        for key in ("train", "validation", "test"):
            value = getattr(self, key)
            if value is not None and Path(value).suffix.lower() not in DATA_SUFFIXES:
                problems.append(
                    f"data.{key}={value!r}: unsupported file type; use {', '.join(DATA_SUFFIXES)}"
                )
        for key in ("max_train_rows", "max_eval_rows"):
            if getattr(self, key) is not None:
                _positive(problems, f"data.{key}", getattr(self, key))
        _raise("data config", problems)

    def split_file(self, split: str) -> Path | None:
        """The local file for ``split``: the explicit one, else the shipped task's."""
        explicit = getattr(self, split)
        if explicit is not None:
            return Path(explicit)
        if self.task is not None:
            from loradock.training.tasks import get_task

            return get_task(self.task).split_path(split)
        return None


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
        _positive(problems, "lora.lora_alpha", self.lora_alpha)
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
        _raise("LoRA settings", problems)

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
    """``none`` (LoRA) or ``nf4`` (QLoRA: 4-bit NF4, double quantization, bf16 compute)."""

    mode: str = "none"

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZATION_MODES:
            _raise(
                "quantization config",
                [f"quantization.mode={self.mode!r} is not one of {', '.join(QUANTIZATION_MODES)}"],
            )

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


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
            _positive(problems, f"trainer.{key}", getattr(self, key))
        _positive(problems, "trainer.warmup_steps", self.warmup_steps, allow_zero=True)
        _positive(problems, "trainer.weight_decay", self.weight_decay, allow_zero=True)
        if self.max_steps == -1 or self.max_steps is None:
            _positive(problems, "trainer.num_train_epochs", self.num_train_epochs)
        elif not isinstance(self.max_steps, int) or self.max_steps < 1:
            problems.append(f"trainer.max_steps={self.max_steps!r} must be -1 (use epochs) or >= 1")
        if self.eval_steps is not None:
            _positive(problems, "trainer.eval_steps", self.eval_steps)
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
        _raise("trainer settings", problems)

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
            _positive(problems, "eval.limit", self.limit)
        _positive(problems, "eval.max_new_tokens", self.max_new_tokens)
        _positive(problems, "eval.batch_size", self.batch_size)
        _raise("eval settings", problems)


@dataclass
class PublishConfig:
    """Where the adapter goes: a repo in the configured store (local hub by default)."""

    repo_id: str | None = None
    private: bool = False
    task: str | None = None
    aliases: list[str] = field(default_factory=list)
    enabled: bool = True

    def __post_init__(self) -> None:
        from loradock.errors import InvalidNameError
        from loradock.registry.names import validate_alias, validate_repo_id

        problems = []
        if self.enabled and not self.repo_id:
            problems.append("publish.repo_id is required (or set publish.enabled: false)")
        for check, value in [(validate_repo_id, self.repo_id)] * bool(self.repo_id) + [
            (validate_alias, a) for a in self.aliases
        ]:
            try:
                check(value)
            except InvalidNameError as exc:
                problems.append(f"publish: {exc}")
        _raise("publish config", problems)


SECTIONS: dict[str, type] = {
    "base": BaseModelConfig,
    "data": DataConfig,
    "lora": LoraSettings,
    "quantization": QuantizationConfig,
    "trainer": TrainerSettings,
    "eval": EvalSettings,
    "publish": PublishConfig,
}


@dataclass
class JobConfig:
    """A whole training job; build it from YAML with :meth:`from_yaml`."""

    name: str
    base: BaseModelConfig
    data: DataConfig
    output_dir: Path | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    publish: PublishConfig = field(default_factory=PublishConfig)
    seed: int = 42
    source_text: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.output_dir is None:
            # Default: under LORADOCK_HOME, so shipped jobs never write into the source tree.
            from loradock.settings import get_settings

            self.output_dir = get_settings().home / "runs" / str(self.name)
        self.output_dir = Path(self.output_dir).expanduser()
        problems = []
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            problems.append(f"seed={self.seed!r} must be an integer")
        if not re.fullmatch(r"^[A-Za-z0-9][\w.-]*$", str(self.name)):
            problems.append(f"name={self.name!r}: use letters, digits, '.', '-' or '_'")
        _raise("job config", problems)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, base_dir: Path | None = None, source_text: str | None = None
    ) -> JobConfig:
        """Build every section, collecting ALL problems (and unknown keys) into one error.

        Relative file paths (data files, output folder) are taken relative to ``base_dir``
        (the YAML file's folder) so a job runs the same from any working directory.
        """
        if not isinstance(data, dict):
            raise ConfigError(
                "Invalid job config", [f"expected a mapping, got {type(data).__name__}"]
            )
        problems: list[str] = []
        top = {"name", "output_dir", "seed", *SECTIONS}
        problems += [
            f"unknown key {k!r} (known: {', '.join(sorted(top))})" for k in data if k not in top
        ]
        for key in ("name", "base", "data"):
            if key not in data:
                problems.append(f"missing required key {key!r}")
        sections: dict[str, Any] = {}
        for key, section_cls in SECTIONS.items():
            raw = data.get(key)
            if raw is None:
                if key in ("base", "data"):
                    continue
                raw = {}
            if key == "base" and isinstance(raw, str):
                raw = {"name": raw}
            if not isinstance(raw, dict):
                problems.append(f"{key}: expected a mapping, got {raw!r}")
                continue
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = [k for k in raw if k not in known]
            problems += [
                f"{key}: unknown key {k!r} (known: {', '.join(sorted(known))})" for k in unknown
            ]
            raw = {k: v for k, v in raw.items() if k in known}
            if key == "data" and base_dir is not None:
                raw = {
                    k: str(base_dir / v)
                    if k in ("train", "validation", "test") and v and not Path(v).is_absolute()
                    else v
                    for k, v in raw.items()
                }
            try:
                sections[key] = section_cls(**raw)
            except ConfigError as exc:
                problems += exc.problems
            except TypeError as exc:
                problems.append(f"{key}: {exc}")
        output_dir = data.get("output_dir")
        if output_dir is not None and base_dir is not None and not Path(output_dir).is_absolute():
            output_dir = base_dir / output_dir
        job = None
        if not problems:
            try:
                job = cls(
                    name=data["name"],
                    output_dir=output_dir,
                    seed=data.get("seed", 42),
                    source_text=source_text,
                    **sections,
                )
            except ConfigError as exc:
                problems += exc.problems
        if problems or job is None:
            raise ConfigError("Invalid training job", problems)
        return job

    @classmethod
    def from_yaml(cls, path: str | Path) -> JobConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("Invalid training job", [f"job file {str(path)!r} does not exist"])
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("Invalid training job", [f"{path}: not valid YAML: {exc}"]) from exc
        return cls.from_dict(data, base_dir=path.parent.resolve(), source_text=text)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (what the card embeds so the job can be re-run)."""
        out: dict[str, Any] = {
            "name": self.name,
            "seed": self.seed,
            "output_dir": str(self.output_dir),
        }
        for key in SECTIONS:
            out[key] = dataclasses.asdict(getattr(self, key))
        return out
