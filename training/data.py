"""Load a job's data set and shape it for trl: conversational prompt/completion where we can.

Our instruction rows (``instruction``/``answer``) become
``{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]}`` so trl
applies the chat template and trains on the completion only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import DataError
from loradock.training.data_config import DATA_SUFFIXES, DataConfig

# Columns each format needs; ``auto`` picks the first format whose columns are all present.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "answer"),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}


@dataclass
class EvalExample:
    """One held-out example for generation: the chat prompt and the exact expected reply."""

    messages: list[dict[str, str]]
    reference: str


def detect_format(columns: list[str], requested: str, *, where: str) -> str:
    if requested != "auto":
        missing = [c for c in FORMAT_COLUMNS[requested] if c not in columns]
        if missing:
            raise DataError(
                f"{where}: format {requested!r} needs column(s) {', '.join(missing)}; the file has "
                f"{', '.join(columns) or 'no columns'}. Rename the columns or set data.format."
            )
        return requested
    for fmt, needed in FORMAT_COLUMNS.items():
        if all(c in columns for c in needed):
            return fmt
    wanted = "; ".join(f"{f}: {', '.join(c)}" for f, c in FORMAT_COLUMNS.items())
    raise DataError(
        f"{where}: cannot tell the data format from its columns ({', '.join(columns) or 'none'}). "
        f"Expected one of: {wanted}."
    )


def load_split(path: Path, *, limit: int | None = None):
    """A ``datasets.Dataset`` from a local jsonl/json/csv/parquet file (rows capped at ``limit``)."""
    import datasets

    if not path.is_file():
        raise DataError(f"Data file {str(path)!r} does not exist: check the path in the job.")
    builder = DATA_SUFFIXES.get(path.suffix.lower())
    if builder is None:
        raise DataError(
            f"Data file {str(path)!r}: unsupported type; use {', '.join(DATA_SUFFIXES)}."
        )
    try:
        if builder == "json":
            # Read JSON ourselves: datasets' JSON builder would turn "2024-03-03" into a timestamp.
            ds = datasets.Dataset.from_list(_read_json_rows(path))
        else:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as exc:  # datasets raises many kinds for a malformed file
        raise DataError(f"Data file {str(path)!r} could not be read: {exc}") from exc
    if len(ds) == 0:
        raise DataError(f"Data file {str(path)!r} has no rows.")
    if limit is not None and len(ds) > limit:
        ds = ds.select(range(limit))
    return ds


def _read_json_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"Data file {str(path)!r} line {number} is not JSON: {exc}"
                    ) from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"Data file {str(path)!r} must hold a list of JSON objects (one per row).")
    return rows


def load_hub_split(hub_id: str, split: str, *, limit: int | None = None):
    """A split of a Hub data set; refuses to try when the Hub is marked offline."""
    import datasets

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise DataError(
            f"data.hub_id={hub_id!r} needs a reachable Hub but HF_HUB_OFFLINE is set: use a local file."
        )
    ds = datasets.load_dataset(hub_id, split=split)
    if limit is not None and len(ds) > limit:
        ds = ds.select(range(limit))
    return ds


def to_trl_rows(ds, fmt: str):
    """Shape rows for ``SFTTrainer``: instruction rows become conversational prompt/completion."""
    if fmt == "instruction":
        return ds.map(
            lambda row: {
                "prompt": [{"role": "user", "content": row["instruction"]}],
                "completion": [{"role": "assistant", "content": row["answer"]}],
            },
            remove_columns=ds.column_names,
        )
    keep = FORMAT_COLUMNS[fmt]
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def eval_examples(ds, fmt: str) -> list[EvalExample]:
    """Prompts and references for held-out generation (empty for ``text`` data)."""
    out: list[EvalExample] = []
    for row in ds:
        if fmt == "instruction":
            out.append(
                EvalExample([{"role": "user", "content": row["instruction"]}], row["answer"])
            )
        elif fmt == "prompt_completion":
            prompt, completion = row["prompt"], row["completion"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            if not isinstance(completion, str):
                completion = completion[-1]["content"]
            out.append(EvalExample(list(prompt), completion))
        elif fmt == "messages":
            msgs = list(row["messages"])
            if msgs and msgs[-1]["role"] == "assistant":
                out.append(EvalExample(msgs[:-1], msgs[-1]["content"]))
    return out


def content_hash(paths: list[Path]) -> str:
    """sha256 over the data files' bytes (in the order given): names the exact data trained on."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass
class JobData:
    """The loaded splits (raw rows and trl-shaped rows), their format and content hash."""

    format: str
    train: Any
    validation: Any | None
    test: Any | None
    files: dict[str, Path]
    sha256: str | None

    def trl_train(self):
        return to_trl_rows(self.train, self.format)

    def trl_validation(self):
        return None if self.validation is None else to_trl_rows(self.validation, self.format)


def load_job_data(cfg: DataConfig, problems: list[str]) -> JobData | None:
    """Load every split named by ``cfg``; each unusable split adds a line to ``problems``."""
    files = {s: p for s in ("train", "validation", "test") if (p := cfg.split_file(s)) is not None}
    splits: dict[str, Any] = {}
    before = len(problems)
    if cfg.hub_id is not None and "train" not in files:
        try:
            splits["train"] = load_hub_split(cfg.hub_id, "train", limit=cfg.max_train_rows)
        except DataError as exc:
            problems.append(str(exc))
    for split, path in files.items():
        limit = cfg.max_train_rows if split == "train" else cfg.max_eval_rows
        try:
            splits[split] = load_split(path, limit=limit)
        except DataError as exc:
            problems.append(str(exc))
    fmt = cfg.format
    for split, ds in splits.items():
        try:
            fmt = detect_format(
                ds.column_names, fmt, where=f"data split {split!r} ({files.get(split)})"
            )
        except DataError as exc:
            problems.append(str(exc))
    if len(problems) > before or "train" not in splits:
        return None
    return JobData(
        format=fmt,
        train=splits["train"],
        validation=splits.get("validation"),
        test=splits.get("test"),
        files=files,
        sha256=content_hash([files[s] for s in sorted(files)]) if files else None,
    )
