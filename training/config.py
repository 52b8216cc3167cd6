"""A training job: its sections, one typed config object per concern, validated when created.

The sections live beside this file (``model_config``, ``data_config``, ``trainer_config``,
``heldout_config``, ``publish_config``). Each dataclass checks its own fields in ``__post_init__`` and raises one ``ConfigError`` listing
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
from loradock.training.config_checks import raise_problems
from loradock.training.data_config import DataConfig
from loradock.training.heldout_config import EvalSettings
from loradock.training.model_config import BaseModelConfig, LoraSettings, QuantizationConfig
from loradock.training.publish_config import PublishConfig
from loradock.training.trainer_config import TrainerSettings

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
        raise_problems("job config", problems)

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
        sections = _build_sections(data, base_dir, problems)
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


def _build_sections(
    data: dict[str, Any], base_dir: Path | None, problems: list[str]
) -> dict[str, Any]:
    """Each section of ``data`` built, its unknown keys and problems added to ``problems``."""
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
    return sections
