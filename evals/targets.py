"""Which models one eval run measures: a base and adapters on it, resolved through the registry.

Each adapter is pinned by its own name (``org/name``, ``@sha``, ``@alias``); its base comes
from its card (``base_model`` and ``base_model_revision``), unless the user names the base
as a target too. Every adapter of one run must share that base: one report compares them
against one reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradock.errors import (
    AdapterNotFoundError,
    ArtifactError,
    BaseModelNotFoundError,
    EvalError,
    IncompatibleAdapterError,
    LoradockError,
    RevisionNotFoundError,
)
from loradock.evals.results import EvalTarget


@dataclass(frozen=True)
class TargetPlan:
    """The base (always measured, as the reference) and the adapters on it."""

    base: EvalTarget
    adapters: tuple[EvalTarget, ...]

    @property
    def all(self) -> tuple[EvalTarget, ...]:
        return (self.base, *self.adapters)


def _base_target(name: str, resolved: Any) -> EvalTarget:
    repo_id = getattr(resolved, "repo_id", None)
    label = repo_id or Path(resolved.path).name
    return EvalTarget(
        label=label,
        kind="base",
        name=name,
        path=Path(resolved.path),
        repo_id=repo_id,
        sha=getattr(resolved, "sha", None),
        card=getattr(resolved, "card", None),
    )


def _adapter_target(name: str, resolved: Any) -> EvalTarget:
    return EvalTarget(
        label=f"{resolved.repo_id}@{resolved.sha[:7]}",
        kind="adapter",
        name=name,
        path=Path(resolved.path),
        repo_id=resolved.repo_id,
        sha=resolved.sha,
        card=resolved.card,
    )


def _resolve_one(registry: Any, name: str) -> EvalTarget:
    """An adapter by registry name, else a base model (registry name or local folder)."""
    if not isinstance(name, str) or not name.strip():
        raise EvalError(
            f"Invalid target {name!r}: name an adapter 'org/name[@rev]' or a base model."
        )
    if Path(name).expanduser().is_dir():
        return _base_target(name, registry.resolve_base(str(Path(name).expanduser())))
    try:
        resolved = registry.resolve(name)
    except RevisionNotFoundError:
        raise  # the repo exists: the revision or alias is what is wrong
    except (AdapterNotFoundError, ArtifactError) as adapter_error:
        try:
            return _base_target(name, registry.resolve_base(name))
        except LoradockError:
            raise AdapterNotFoundError(
                f"No adapter or base model named {name!r} in the registry ({adapter_error}). "
                "Check the name with `loradock registry search`, or publish it first."
            ) from None
    card = resolved.card
    kind = getattr(card, "kind", "adapter") if card is not None else "adapter"
    if kind != "adapter":
        return _base_target(name, resolved)
    return _adapter_target(name, resolved)


def _card_base(target: EvalTarget) -> tuple[str | None, str | None]:
    card = target.card
    if card is None:
        return None, None
    return getattr(card, "base_model", None), getattr(card, "base_revision", None)


def resolve_targets(names: Sequence[str], *, registry: Any, base: str | None = None) -> TargetPlan:
    """Resolve every name, find the one shared base, and check each adapter fits it."""
    if not names and not base:
        raise EvalError("Nothing to evaluate: name a base model or at least one adapter.")
    targets = [_resolve_one(registry, n) for n in names]
    bases = [t for t in targets if t.kind == "base"]
    if base is not None:
        bases.insert(0, _base_target(base, registry.resolve_base(base)))
    adapters = list({t.label: t for t in targets if t.kind == "adapter"}.values())
    distinct_bases = {(b.repo_id, b.sha, str(b.path)) for b in bases}
    if len(distinct_bases) > 1:
        raise EvalError(
            "One run compares adapters against one base, but several bases were named: "
            + ", ".join(repr(b.name) for b in bases)
            + ". Run one eval per base."
        )

    declared = {t.label: _card_base(t) for t in adapters}
    missing = [label for label, (model, _) in declared.items() if not model]
    if missing and not bases:
        raise EvalError(
            f"Adapter(s) {', '.join(map(repr, missing))} have no base_model in their card: "
            "name the base model as a target too."
        )
    base_ids = sorted({model for model, _ in declared.values() if model})
    if len(base_ids) > 1:
        detail = ", ".join(f"{label} -> {model}" for label, (model, _) in declared.items())
        raise EvalError(
            f"Adapters in one run must share their base model, but they name {len(base_ids)}: "
            f"{detail}. Evaluate each base's adapters in a separate run."
        )

    if bases:
        base_target = bases[0]
        if base_ids and base_target.repo_id and base_target.repo_id != base_ids[0]:
            raise IncompatibleAdapterError(
                f"Adapters do not fit base {base_target.name!r}",
                [
                    f"{label} was trained on {model!r}, not {base_target.repo_id!r}"
                    for label, (model, _) in declared.items()
                    if model and model != base_target.repo_id
                ],
            )
    else:
        revisions = sorted({rev for model, rev in declared.values() if rev})
        pinned = f"{base_ids[0]}@{revisions[0]}" if revisions else base_ids[0]
        if len(revisions) > 1:
            pinned = _same_weights_revision(registry, base_ids[0], revisions)
        try:
            base_target = _base_target(pinned, registry.resolve_base(pinned))
        except (BaseModelNotFoundError, AdapterNotFoundError) as exc:
            raise BaseModelNotFoundError(
                f"The adapters' base {pinned!r} is not in the registry ({exc}): publish it with "
                "`loradock base publish`, or pass --base with a local folder."
            ) from None

    _check_fit(adapters, base_target)
    return TargetPlan(base=base_target, adapters=tuple(adapters))


def _same_weights_revision(registry: Any, base_id: str, revisions: list[str]) -> str:
    """The base's head when every revision the adapters name holds its weights.

    A base repo gains revisions that change only its card (eval results written back), so
    adapters trained before and after such a commit name different revisions of the same
    weights; different weights are a real mismatch the user must settle.
    """
    from loradock.evals.publish import weights_digest

    def digest(name: str) -> dict[str, str]:
        try:
            return weights_digest(registry.resolve_base(name).path, "base")
        except LoradockError:
            return {}

    head = registry.resolve_base(base_id)
    wanted = weights_digest(head.path, "base")
    if all(digest(f"{base_id}@{rev}") == wanted for rev in revisions):
        return f"{base_id}@{head.sha}"
    raise EvalError(
        f"Adapters name base {base_id!r} at revisions with different weights "
        f"({', '.join(revisions)}): pin one with --base {base_id}@<revision>."
    )


def _check_fit(adapters: Sequence[EvalTarget], base: EvalTarget) -> None:
    """Every adapter's weights fit the base's shapes (one error listing every misfit)."""
    from loradock.registry.compat import check_compatibility

    problems: list[str] = []
    for adapter in adapters:
        try:
            check_compatibility(adapter.path, base.path, base_id=base.repo_id)
        except IncompatibleAdapterError as exc:
            problems += [f"{adapter.label}: {p}" for p in exc.problems]
    if problems:
        raise IncompatibleAdapterError(f"Adapters do not fit base {base.label!r}", problems)
