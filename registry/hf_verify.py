"""A downloaded Hub snapshot checked against what the Hub records for each file: the LFS
sha256, else the git blob id. Nothing unverified is served."""

from __future__ import annotations

import hashlib
from pathlib import Path

from huggingface_hub.hf_api import ModelInfo

from loradock.errors import IntegrityError
from loradock.registry.store import hash_file, sha256_file


def verify_snapshot(folder: Path, model: ModelInfo, wanted: set[str] | None) -> None:
    problems = []
    for sibling in model.siblings or []:
        if wanted is not None and sibling.rfilename not in wanted:
            continue
        path = folder / sibling.rfilename
        if not path.is_file():
            problems.append(f"{sibling.rfilename}: missing after download")
            continue
        if sibling.lfs is not None:
            expected, actual = sibling.lfs.sha256, _hash_file(path, "sha256")
        elif sibling.blob_id:
            expected, actual = sibling.blob_id, _hash_file(path, "git")
        else:
            continue
        if expected != actual:
            problems.append(f"{sibling.rfilename}: hash {actual} != recorded {expected}")
    if problems:
        # Named by repo and revision only: the message may reach an API user.
        raise IntegrityError(
            f"The download of {model.id!r}@{model.sha} does not match the Hub: "
            + "; ".join(problems)
            + ". Download it again."
        )


def _hash_file(path: Path, kind: str) -> str:
    if kind == "git":  # a git blob id: sha1 over a "blob <size>\0" header and the bytes
        return hash_file(path, hashlib.sha1(b"blob %d\0" % path.stat().st_size))
    return sha256_file(path)


__all__ = ["verify_snapshot"]
