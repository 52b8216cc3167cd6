"""Bad inputs: each gives its own clear error, quoting the bad value, and changes nothing.

Every case runs against a registry already holding a base, an adapter with an alias and
their index rows; after the error, the index answers the same searches with the same rows
and the store holds the same repos, commits and tags.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    ArtifactError,
    CardError,
    ConfigError,
    IncompatibleAdapterError,
    InvalidNameError,
    RevisionNotFoundError,
    UnsafeArtifactError,
)
from loradock.registry import EvalMetric, Registry, build_adapter_card, build_base_card
from tests.helpers.registry import BASE_ID, NARROW_BASE_ID

CARD = build_adapter_card(base_model=BASE_ID, task="dates")


def _with_readme(folder: Path, text: str, tmp: Path) -> Path:
    out = tmp / "with-readme"
    shutil.copytree(folder, out)
    (out / "README.md").write_text(text)
    return out


def _nan_card() -> object:
    # Built field by field: the builders refuse NaN, so this is what a careless caller makes.
    return CARD.__class__(
        base_model=BASE_ID, task="dates", eval_results=(EvalMetric("dates", "d", "acc", math.nan),)
    )


# (id, action(registry, env) -> anything, expected error type, text the message must quote)
Case = tuple[str, Callable, type[Exception], str]
CASES: list[Case] = [
    (
        "malformed-card-yaml",
        lambda reg, env: reg.publish(
            _with_readme(env.good, "---\nbase_model: [oops\n---\n", env.tmp), "acme/new"
        ),
        CardError,
        "[oops",
    ),
    (
        "missing-adapter-config",
        lambda reg, env: reg.publish(env.broken("no-config"), "acme/new", card=CARD),
        ArtifactError,
        "No adapter_config.json in '",
    ),
    (
        "wrong-base-hidden-size",
        lambda reg, env: reg.publish(
            env.good, "acme/new", card=build_adapter_card(base_model=NARROW_BASE_ID)
        ),
        IncompatibleAdapterError,
        "hidden_size=32",
    ),
    (
        "unknown-alias",
        lambda reg, env: reg.resolve("acme/dates-lora@canary"),
        AliasNotFoundError,
        "'canary'",
    ),
    (
        "unknown-alias-in-index",
        lambda reg, env: reg.show("acme/dates-lora@canary"),
        AliasNotFoundError,
        "'canary'",
    ),
    (
        "unknown-repo",
        lambda reg, env: reg.resolve("acme/nope"),
        AdapterNotFoundError,
        "'acme/nope'",
    ),
    (
        "path-traversal-publish",
        lambda reg, env: reg.publish(env.good, "../x", card=CARD),
        InvalidNameError,
        "'../x'",
    ),
    (
        "path-traversal-resolve",
        lambda reg, env: reg.resolve("a/../../b"),
        InvalidNameError,
        "'a/../../b'",
    ),
    (
        "absolute-path-as-name",
        lambda reg, env: reg.resolve("/etc/passwd"),
        InvalidNameError,
        "'/etc/passwd'",
    ),
    (
        "pickle-only-adapter",
        lambda reg, env: reg.publish(env.broken("pickle-only"), "acme/new", card=CARD),
        UnsafeArtifactError,
        "adapter_model.bin'",
    ),
    (
        "truncated-safetensors",
        lambda reg, env: reg.publish(env.broken("truncated"), "acme/new", card=CARD),
        ArtifactError,
        "adapter_model.safetensors' is truncated",
    ),
    (
        "rank-over-limit",
        lambda reg, env: reg.publish(env.good, "acme/new", card=CARD, max_rank=2),
        IncompatibleAdapterError,
        "rank 4 is over the limit of 2",
    ),
    (
        "unknown-target-module",
        lambda reg, env: reg.publish(env.broken("unknown-target"), "acme/new", card=CARD),
        IncompatibleAdapterError,
        "'qkv_fused'",
    ),
    (
        "non-lora-peft-type",
        lambda reg, env: reg.publish(env.broken("ia3"), "acme/new", card=CARD),
        IncompatibleAdapterError,
        "'IA3'",
    ),
    (
        "modules-to-save",
        lambda reg, env: reg.publish(env.broken("modules-to-save"), "acme/new", card=CARD),
        IncompatibleAdapterError,
        "modules_to_save=['lm_head']",
    ),
    (
        "bad-revision-string",
        lambda reg, env: reg.resolve("acme/dates-lora@bad!rev"),
        InvalidNameError,
        "'bad!rev'",
    ),
    (
        "unknown-sha",
        lambda reg, env: reg.resolve("acme/dates-lora@" + "f" * 40),
        RevisionNotFoundError,
        "'" + "f" * 40 + "'",
    ),
    (
        "nan-metric",
        lambda reg, env: reg.update_card("acme/dates-lora", _nan_card()),
        CardError,
        "value=nan",
    ),
    (
        "bad-alias-name",
        lambda reg, env: reg.publish(env.good, "acme/new", card=CARD, aliases=["Prod!"]),
        InvalidNameError,
        "'Prod!'",
    ),
    (
        "alias-to-unknown-revision",
        lambda reg, env: reg.set_alias("acme/dates-lora", "prod", "e" * 40),
        RevisionNotFoundError,
        "'" + "e" * 40 + "'",
    ),
    (
        "base-folder-without-config",
        lambda reg, env: reg.publish_base(env.tmp, "acme/new-base", card=build_base_card()),
        ArtifactError,
        "' has no config.json",
    ),
    (
        "adapter-card-on-a-base-repo",
        lambda reg, env: reg.update_card(BASE_ID, CARD),
        CardError,
        "base_model_relation='adapter'",
    ),
    (
        "aliases-of-unknown-repo",
        lambda reg, env: reg.aliases("acme/nope"),
        AdapterNotFoundError,
        "'acme/nope'",
    ),
    (
        "path-traversal-revisions",
        lambda reg, env: reg.revisions("../x"),
        InvalidNameError,
        "'../x'",
    ),
    (
        "compatible-with-rank-zero",
        lambda reg, env: reg.compatible(BASE_ID, max_rank=0),
        ConfigError,
        "max_rank 0",
    ),
    (
        "sync-with-a-repo-id-as-author",
        lambda reg, env: reg.sync(author="acme/dates-lora", progress=False),
        InvalidNameError,
        "'acme/dates-lora'",
    ),
]


class Env:
    def __init__(self, good: Path, broken: Callable[[str], Path], tmp: Path):
        self.good, self.broken, self.tmp = good, broken, tmp


def _state(reg: Registry) -> tuple:
    """Everything a bad input must leave alone: index answers and store history."""
    index = (
        reg.search(kind=None, limit=1000),
        reg.search(base_model=BASE_ID),
        reg.search(task="dates"),
        reg.revisions("acme/dates-lora"),
        reg.aliases("acme/dates-lora"),
        reg.index.repos(),
    )
    store = tuple(
        (info.repo_id, tuple(c.sha for c in reg.store.list_commits(info.repo_id)))
        for info in reg.store.list_repos()
    )
    refs = reg.store.list_refs("acme/dates-lora")
    return index, store, refs.tags, refs.branches


def test_at_least_twelve_cases():
    assert len(CASES) >= 12


@pytest.mark.parametrize(
    ("action", "error", "quoted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(
    registry_with_base, adapter_dir, broken_adapter, tmp_path, action, error, quoted
):
    reg = registry_with_base
    reg.publish(adapter_dir, "acme/dates-lora", card=CARD, aliases=["prod"])
    env = Env(adapter_dir, broken_adapter, tmp_path)
    before = _state(reg)
    with pytest.raises(error) as info:
        action(reg, env)
    assert quoted in str(info.value), str(info.value)
    assert _state(reg) == before
    assert not re.search(r"Traceback|NoneType", str(info.value))
