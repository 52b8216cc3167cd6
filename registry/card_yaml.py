"""Reading a card's YAML front matter safely: bounded in size, without anchors or aliases.

Cards come from anyone who can push to a repo, and ``resolve`` reads them for any API user.
YAML's anchors and aliases (``&a [x, x]``, ``*a``) let a few hundred bytes stand for a tree
of gigabytes once anything walks it (stringifying tags, dumping the card, JSON): the
"billion laughs". Model cards have no use for them, so a front matter holding either is
refused before it is built, and a card is refused whole above :data:`MAX_CARD_BYTES`.
"""

from __future__ import annotations

from typing import Any

import yaml
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from loradock.errors import CardError

# A README larger than this is not read (the Hub's own cards stay far below it).
MAX_CARD_BYTES = 1024 * 1024
# libyaml's parser when PyYAML was built with it (the wheels are): the same safe constructor,
# ~5x faster than the pure-Python one that huggingface_hub's ModelCard uses. Resolving a name
# parses two cards, and this was 70% of the time (0.9 ms a resolve on the bench's cards).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_card_size(size: int, what: str = "The card") -> None:
    """Refuse a card of ``size`` bytes above :data:`MAX_CARD_BYTES` (before reading it)."""
    if size > MAX_CARD_BYTES:
        raise CardError(
            f"{what} is {size} bytes, over the {MAX_CARD_BYTES}-byte limit for a model card; "
            "shorten it (large content belongs in files of the repo, not in README.md)."
        )


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through :data:`YAML_LOADER`, refusing oversized text and YAML
    anchors/aliases (``CardError``). Broken YAML is parsed again by the pure-Python loader,
    whose error quotes the offending line (libyaml's gives only a position): the error is the
    one ``yaml.safe_load`` raises."""
    check_card_size(len(text.encode("utf-8", errors="replace")), "The card's YAML")
    if "&" in text or "*" in text:  # the only characters that start an anchor or an alias
        _refuse_anchors(text)
    try:
        return yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError:
        if YAML_LOADER is yaml.SafeLoader:
            raise
        return yaml.safe_load(text)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A README's YAML front matter as a dict, and the body after it, exactly as
    huggingface_hub's ``RepoCard`` splits them (its regex), parsed by :func:`load_yaml`.
    Raises ``yaml.YAMLError`` for broken YAML, ``ValueError`` when it is not a mapping,
    ``CardError`` for anchors, aliases or an oversized card."""
    check_card_size(len(text.encode("utf-8", errors="replace")))
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        return {}, text
    data = load_yaml(match.group(2))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("repo card metadata block should be a dict")
    return data, text[match.end() :]


def _refuse_anchors(text: str) -> None:
    """Walk the parser's events (no node is built) and refuse the first anchor or alias.
    Broken YAML is left for the loader, whose error says what is wrong."""
    try:
        for event in yaml.parse(text, Loader=YAML_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
                raise CardError(
                    f"The card's YAML uses a {kind} ({'*' if kind == 'alias' else '&'}"
                    f"{event.anchor}); loradock refuses YAML anchors and aliases in cards "
                    "(nested aliases expand to gigabytes). Write the values out instead."
                )
    except yaml.YAMLError:
        return


__all__ = ["MAX_CARD_BYTES", "YAML_LOADER", "check_card_size", "load_yaml", "split_front_matter"]
