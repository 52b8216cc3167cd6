"""What the Browse tab shows of one adapter (no Gradio here): lineage as readable
tables, the card's own files (the loss plot) made loadable, revisions and their metrics.

Every value comes from a card or an index row, so each is escaped (markup.py). Local
paths of the machine that trained the adapter (``output_dir``, data files) mean nothing
to a reviewer and say too much about that machine: they are left out.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

try:
    from .markup import md_code, md_text
    from .records import AdapterCardView, AdapterRow
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from markup import md_code, md_text  # type: ignore[no-redef]
    from records import AdapterCardView, AdapterRow  # type: ignore[no-redef]

LOCAL_PATH = "(local path)"
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")
_YAML_PATH_VALUE = re.compile(r"^(\s*(?:-\s+)?[\w.-]+:\s+)(['\"]?)(?:/|~/|[A-Za-z]:[\\/])[^\n]*$")
# ![alt](target "title"): the targets a card links as images, relative ones served by revision.
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
_FILE_NAME = re.compile(r"^[\w][\w.-]*(/[\w][\w.-]*)*$")
# Sections of the card's ``loradock:`` block, in reading order, with their titles.
_SECTIONS = (
    ("dataset", "Data set"),
    ("hyperparameters", "Hyperparameters"),
    ("summary", "Training run"),
    ("libraries", "Libraries"),
)
_SKIPPED = {"job", "job_yaml", "loss_plot", "heldout", "base_model", "output_dir"}


def is_local_path(value: Any) -> bool:
    return isinstance(value, str) and bool(_ABSOLUTE.match(value.strip()))


def redact_yaml_paths(text: str) -> str:
    """The job YAML with every absolute path value replaced by ``(local path)``."""
    lines = [_YAML_PATH_VALUE.sub(rf"\g<1>{LOCAL_PATH}", line) for line in text.splitlines()]
    return "\n".join(lines)


def _flat(values: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Nested settings as dotted keys (``lora.r``), local paths and ``output_dir`` left out."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key == "output_dir" or is_local_path(value):
            continue
        if isinstance(value, dict) and value:
            yield from _flat(value, name + ".")
        else:
            yield name, value


def _cell(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return md_code(text, in_table=True)


def _table(title: str, values: dict[str, Any]) -> str:
    rows = [f"| {md_text(k)} | {_cell(v)} |" for k, v in _flat(values)]
    if not rows:
        return ""
    return f"**{md_text(title)}**\n\n| setting | value |\n|---|---|\n" + "\n".join(rows)


def code_block(text: str, language: str = "yaml") -> str:
    """A fenced block nothing inside can close: the fence outgrows any backtick run."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def lineage_markdown(row: AdapterRow | None, card: AdapterCardView) -> str:
    """Where the adapter comes from: base + revision, data set and its hash, settings,
    libraries, and the job YAML to re-run it."""
    lineage = dict(card.lineage)
    training = lineage.get("training") if isinstance(lineage.get("training"), dict) else {}
    base_info = training.get("base_model") if isinstance(training.get("base_model"), dict) else {}
    base = lineage.get("base_model") or (row.base_model if row else None) or "unknown"
    base_rev = (
        lineage.get("base_revision")
        or base_info.get("revision")
        or (row.base_revision if row else None)
    )
    datasets = lineage.get("datasets") or (list(row.datasets) if row else [])
    datasets = [datasets] if isinstance(datasets, str) else datasets
    sha = card.sha or (row.sha if row else None) or "?"
    blocks = [
        f"**Adapter:** {md_code(card.repo_id)} at {md_code(sha)}",
        f"**Base model:** {md_code(base)}"
        + (f" @ {md_code(base_rev)}" if base_rev else " (revision not pinned)"),
        "**Data sets:** "
        + (", ".join(md_code(d) for d in datasets) if datasets else "not recorded"),
    ]
    if row and row.tasks:
        blocks.append("**Tasks:** " + ", ".join(md_text(t) for t in row.tasks))
    if "seed" in training:
        blocks.append(f"**Seed:** {md_code(training['seed'])}")
    for key, title in _SECTIONS:
        if isinstance(training.get(key), dict):
            blocks.append(_table(title, training[key]))
    rest = {k: v for k, v in training.items() if k not in _SKIPPED and k != "seed"}
    rest = {k: v for k, v in rest.items() if k not in dict(_SECTIONS)}
    blocks.append(_table("Other settings", rest))
    if isinstance(training.get("job_yaml"), str):
        yaml_text = redact_yaml_paths(training["job_yaml"])
        blocks.append("**Job YAML** (`loradock train job.yaml`)\n\n" + code_block(yaml_text))
    shown = {"base_model", "base_revision", "datasets", "training", "revisions", "aliases"}
    blocks.append(_table("Other lineage", {k: v for k, v in lineage.items() if k not in shown}))
    return "\n\n".join(b for b in blocks if b)


def linked_files(markdown: str) -> list[str]:
    """Relative image targets in the card (``training_loss.png``): files of the repo."""
    targets = [m.group(2) for m in _IMAGE.finditer(markdown)]
    return list(dict.fromkeys(t for t in targets if _FILE_NAME.match(t) and ".." not in t))


def inline_images(markdown: str, files: dict[str, tuple[bytes, str] | str]) -> str:
    """The card with each fetched image as a data URL; an image that could not be fetched
    becomes a sentence saying why (``files`` maps target -> (bytes, type) or a reason)."""

    def swap(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        got = files.get(target)
        if got is None:
            return match.group(0)
        if isinstance(got, str):
            return f"_({md_text(alt or target)}: {md_text(got)})_"
        data, content_type = got
        encoded = base64.b64encode(data).decode("ascii")
        return f"![{alt}](data:{content_type};base64,{encoded})"

    return _IMAGE.sub(swap, markdown)


def revisions_frame(row: AdapterRow | None, card: AdapterCardView) -> pd.DataFrame:
    """Each known revision with the aliases pointing at it (newest first as the server lists)."""
    lineage = card.lineage
    revisions = [
        str(r.get("sha", r)) if isinstance(r, dict) else str(r)
        for r in lineage.get("revisions") or ()
    ]
    aliases = lineage.get("aliases") or (row.aliases if row else {})
    if isinstance(aliases, list):
        aliases = {str(a): (row.sha if row else "") or "" for a in aliases}
    if not revisions and row:
        revisions = list(row.revisions) or ([row.sha] if row.sha else [])
    records = []
    for sha in revisions:
        names = [a for a, target in aliases.items() if target and target == sha]
        records.append({"revision": sha, "aliases": ", ".join(sorted(names))})
    for alias, target in aliases.items():  # aliases whose target the list did not include
        if not target or target not in revisions:
            records.append({"revision": target or "(unknown)", "aliases": alias})
    return pd.DataFrame.from_records(records, columns=["revision", "aliases"])


def revision_choices(card: AdapterCardView) -> list[str]:
    """Revision shas the card lists, newest first (as the server lists them)."""
    revisions = card.lineage.get("revisions") or ()
    shas = [str(r.get("sha", "")) if isinstance(r, dict) else str(r) for r in revisions]
    return [s for s in shas if s]


def revision_metrics(card: AdapterCardView, left: str | None, right: str | None) -> pd.DataFrame:
    """Two revisions' metrics side by side, with the change from ``left`` to ``right``."""
    metrics: dict[str, dict[str, float]] = {}
    for item in card.lineage.get("revisions") or ():
        if isinstance(item, dict) and isinstance(item.get("metrics"), dict):
            metrics[str(item.get("sha"))] = AdapterRow.from_json(item).metrics
    a, b = metrics.get(left or "", {}), metrics.get(right or "", {})
    records = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        change = None if va is None or vb is None else round(vb - va, 4)
        records.append({"metric": key, "left": va, "right": vb, "change": change})
    columns = ["metric", "left", "right", "change"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    short = {"left": f"{(left or '?')[:12]}", "right": f"{(right or '?')[:12]}"}
    if short["left"] == short["right"]:
        short = {"left": f"{short['left']} (left)", "right": f"{short['right']} (right)"}
    return frame.rename(columns=short)
