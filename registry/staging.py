"""Staging a publish: a throwaway copy of the user's folder with the card and config written in.

The user's folder is never modified: files are hard-linked (or copied) into a temporary
folder and the two files loradock rewrites (``README.md``, ``adapter_config.json``) are
unlinked there before being written, so nothing is written through a link. Only the
folder's top-level files travel (PEFT and transformers save flat folders); a trainer's
``checkpoint-*/`` or ``runs/`` subfolders and pickle files stay behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loradock.errors import ArtifactError, CardError
from loradock.registry.artifact import (
    CONFIG_FILENAME,
    AdapterArtifact,
    read_safetensors_header,
)
from loradock.registry.card import CARD_FILENAME, AdapterCard, build_adapter_card
from loradock.registry.names import REPO_ID_RE

logger = logging.getLogger(__name__)

# Pickle-based formats: loading them can run code, so they are published only on request.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def publishable_files(folder: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The files of ``folder`` a publish uploads: top-level, not hidden, no pickles."""
    chosen, left = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or (path.suffix in PICKLE_SUFFIXES and not allow_pickle):
            left.append(path.name)
        elif path.is_file():
            chosen.append(path)
    if left:
        logger.info("Not uploading from %s: %s", folder, ", ".join(left))
    return chosen


@contextmanager
def staged_copy(folder: Path, *, allow_pickle: bool = False) -> Iterator[Path]:
    """A temporary copy of ``folder``'s publishable files, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="loradock-publish-"))
    try:
        for src in publishable_files(folder, allow_pickle=allow_pickle):
            try:
                os.link(src, tmp / src.name)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(src, tmp / src.name)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_card_and_config(folder: Path, card: AdapterCard, *, adapter: bool) -> None:
    """Write the card as README.md; for adapters, name the base by the card's repo id."""
    _replace_file(folder / CARD_FILENAME, card.to_text())
    if not adapter:
        return
    # PEFT records the base as a local path when trained from a folder; published adapters
    # name it by repo id (and revision) so any machine can find it.
    path = folder / CONFIG_FILENAME
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = card.base_model
    if card.base_revision:
        config["revision"] = card.base_revision
    _replace_file(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def card_from_folder(folder: Path, artifact: AdapterArtifact) -> AdapterCard:
    """The card to publish when none was given: the folder's own, else one naming the base
    adapter_config names, when either names it by Hub id."""
    card = AdapterCard.from_repo_folder(folder)
    if card is not None and card.kind == "adapter" and is_repo_id(card.base_model):
        return card
    if is_repo_id(artifact.base_model):
        return build_adapter_card(base_model=artifact.base_model)
    named = card.base_model if card is not None and card.base_model else artifact.base_model
    raise CardError(
        f"Cannot tell which Hub model {str(folder)!r} adapts: it names the base {named!r}, "
        "not an 'org/name' id. Pass card=build_adapter_card(base_model='org/name', ...)."
    )


def named_for_repo(card: AdapterCard, repo_id: str) -> AdapterCard:
    """model-index needs a model name: the repo's name unless the card chose one."""
    if card.eval_results and card.model_name in (None, f"loradock-{card.task or 'model'}"):
        return dataclasses.replace(card, model_name=repo_id.split("/", 1)[1])
    return card


def is_repo_id(value: str | None) -> bool:
    """An ``org/name`` Hub id (and not, by chance, a relative folder that exists here)."""
    return bool(value and REPO_ID_RE.fullmatch(value) and not Path(value).exists())


def check_model_weights(folder: Path) -> None:
    """A base or merged model folder must hold complete safetensors weights."""
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ArtifactError(f"{str(folder)!r} holds no *.safetensors weights.")
    for w in weights:
        read_safetensors_header(w)


def _replace_file(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)  # never write through a hard link into the user's folder
    path.write_text(text, encoding="utf-8")
