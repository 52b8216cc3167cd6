"""The registry content the eval tests evaluate: a tiny base and two adapters on it."""

from __future__ import annotations

from tests.helpers.registry import BASE_ID


def publish_tiny(registry, tiny_base, tiny_adapter_factory) -> dict[str, str]:
    """The tiny base and two adapters (different seeds) published under ``acme/``."""
    from loradock.registry.card import build_adapter_card, build_base_card

    registry.publish_base(tiny_base, BASE_ID, card=build_base_card())
    names = {}
    for task, seed in (("dates", 1), ("extraction", 2)):
        card = build_adapter_card(base_model=BASE_ID, task=task)
        pub = registry.publish(tiny_adapter_factory(seed=seed), f"acme/tiny-{task}", card=card)
        names[task] = pub.repo_id
    return names
