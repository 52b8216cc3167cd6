"""Where lm-eval caches one target's answers (its ``use_cache`` SQLite file).

lm-eval keys each cached answer by the request alone (type, prompt, generation arguments),
so the file must be specific to the model that answered: one per model@sha (with the base
sha for an adapter) and per backend, dtype and device. Re-running base and unchanged
adapters after adding one then only computes the new adapter's requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from loradock.evals.options import EvalOptions
from loradock.evals.results import EvalTarget

log = logging.getLogger(__name__)


def _identity(target: EvalTarget) -> str | None:
    """``repo@sha``: a pinned revision, the only name whose weights cannot change."""
    return f"{target.repo_id}@{target.sha}" if target.repo_id and target.sha else None


def cache_prefix(
    options: EvalOptions, backend: str, target: EvalTarget, base: EvalTarget, served: str = ""
) -> str | None:
    """The cache path prefix for ``target`` (lm-eval appends ``_rank0.db``), or None.

    A model named by a local folder has no pinned revision, so it is never cached (nor are
    adapters measured on it): its files may change between runs.
    """
    if not options.use_cache:
        return None
    ids = [_identity(target)] + ([_identity(base)] if target.kind == "adapter" else [])
    if None in ids:
        log.info("not caching %s: no pinned revision (a local folder)", target.label)
        return None
    from lm_eval import __version__ as lm_eval_version

    key = {
        "models": ids,
        "backend": backend,
        "served": served,
        "dtype": options.dtype,
        "device": options.device,
        "lm_eval": lm_eval_version,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(options.cache_dir) if options.cache_dir else _default_folder()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", target.label).strip("_")
    return str(folder / f"{name}-{digest}")


def _default_folder() -> Path:
    from loradock.settings import get_settings

    return get_settings().home / "eval-cache"
