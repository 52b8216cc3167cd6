"""The demo's two merge steps (``loradock.demo`` runs them; ``training/merge.py`` does the work).

- ``combine_task_adapters``: the ``dates`` and ``extraction`` LoRA adapters combined into one
  new adapter (``loradock merge A B --method cat --into adapter``), which step 4 then
  evaluates on both tasks next to its sources.
- ``merge_promoted_adapter``: the promoted ``dates`` adapter merged into its base's weights
  (``loradock merge org/name@sha``), its check's figures kept for the demo's output (serving
  it is ``loradock.demo_serving``).

Both reuse what an earlier run published from the same source weights.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rich.console import Console

from loradock.errors import LoradockError

console = Console()

# ``cat`` stacks the sources' LoRA matrices: the combination's weight change is exactly the
# weighted sum of theirs. The element-wise methods (linear, ties, dare) mix A and B matrices
# separately, adding cross terms no source was trained with.
COMBINE_METHOD = "cat"
COMBINE_WEIGHTS = (1.0, 1.0)


def combined_repo(result: Any) -> str:
    """The combination's repo id, next to its sources: ``<org>/<model>-dates-extraction-cat``."""
    first = next(r for r in result.adapters if r.endswith("-dates-lora"))
    return f"{first.removesuffix('-dates-lora')}-dates-extraction-{COMBINE_METHOD}"


def _weights_digest(registry: Any, name: str) -> str:
    path = registry.resolve(name).path / "adapter_model.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _published_from(resolve: Any, registry: Any, repo_id: str, sources: list[str]) -> str | None:
    """The latest sha of ``repo_id`` (read with ``resolve``) when it was made from the
    weights ``sources`` hold now.

    Sources are compared by their weights, not their revision: publishing eval results
    makes a new revision of each source without changing what it computes."""
    try:
        published = resolve(repo_id)
    except LoradockError:
        return None
    card = published.card
    recorded = ((card and card.training) or {}).get("merge", {}).get("sources") or []
    if [s.get("repo_id") for s in recorded] != [s.partition("@")[0] for s in sources]:
        return None
    for source, rec in zip(sources, recorded, strict=True):
        old = f"{rec['repo_id']}@{rec['revision']}"
        if _weights_digest(registry, old) != _weights_digest(registry, source):
            return None
    return published.sha


def combine_task_adapters(registry: Any, result: Any) -> str:
    """Publish (or reuse) the dates + extraction combination; returns its repo id."""
    from loradock.training.merge import merge
    from loradock.training.merge_config import MergeConfig

    repo_id = combined_repo(result)
    ends = ("-dates-lora", "-extraction-lora")
    sources = [f"{r}@{sha}" for r, sha in result.adapters.items() if r.endswith(ends)]
    sha = _published_from(registry.resolve, registry, repo_id, sources)
    if sha:
        console.print(f"{repo_id}@{sha[:8]}: combined earlier from the same weights, reused")
        result.reused.append(f"combine:{repo_id}")
    else:
        config = MergeConfig(
            sources=tuple(sources),
            weights=COMBINE_WEIGHTS,
            method=COMBINE_METHOD,
            into="adapter",
            repo_id=repo_id,
        )
        sha = merge(config, registry=registry).sha
        console.print(f"combined {', '.join(sources)} ({COMBINE_METHOD}) -> {repo_id}@{sha[:8]}")
    result.adapters[repo_id] = sha
    result.combined = repo_id
    return repo_id


def merge_promoted_adapter(registry: Any, result: Any, source: str) -> str:
    """Merge ``source`` (``org/name@alias``) into its base's weights, or reuse an earlier
    merge of the same weights; returns ``org/name-merged@sha`` and keeps the check's figures."""
    from loradock.training.merge import merge
    from loradock.training.merge_config import MergeConfig

    adapter = registry.resolve(source)
    pinned = f"{adapter.repo_id}@{adapter.sha}"
    config = MergeConfig(sources=(pinned,))
    sha = _published_from(registry.resolve_base, registry, config.target_repo, [pinned])
    if sha:
        console.print(f"{config.target_repo}@{sha[:8]}: merged earlier from the same weights")
        result.reused.append(f"merge:{config.target_repo}")
    else:
        sha = merge(config, registry=registry).sha
    card = registry.resolve_base(f"{config.target_repo}@{sha}").card
    result.merged = {"repo_id": config.target_repo, "sha": sha, "source": pinned}
    result.merged["check"] = card.training.get("merge_check")
    check = result.merged["check"]
    console.print(
        f"merged {pinned} -> {config.target_repo}@{sha[:8]} ({check['dtype']}): greedy tokens "
        f"agree on {check['token_agreement']:.2%} of {check['tokens']}, mean KL "
        f"{check['mean_kl']:.2g} nats, whole answers identical {check['answer_agreement']:.0%}"
    )
    return f"{config.target_repo}@{sha}"
