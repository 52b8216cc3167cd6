"""Hostile registry inputs: names, repos and cards an API user (or a repo's author) chooses.

Each case is refused with its own error and message, names no folder of this machine,
and leaves no weight file downloaded: neither in the snapshot cache nor, for the Hub store,
among the test Hub's requests. Every case runs against both stores (a LocalHub folder, and
HfHub over real huggingface_hub HTTP to tests/hubserver).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from loradock.errors import (
    AdapterNotFoundError,
    ArtifactError,
    CardError,
    ConfigError,
    IncompatibleAdapterError,
    InvalidNameError,
    UnsafeArtifactError,
)
from loradock.registry.api import Registry
from loradock.registry.card import build_adapter_card
from loradock.registry.hf_hub import HfHub
from loradock.registry.local_hub import LocalHub
from loradock.settings import Settings, get_settings
from tests.helpers.registry import BASE_ID

pytest_plugins = ["hubserver.fixtures"]

WEIGHT_NAMES = {"adapter_model.safetensors", "adapter_model.bin", "model.safetensors"}
GOOD = "evil/good"


def _bomb(depth: int = 5) -> str:
    """A "billion laughs" card: each level lists the one before nine times (9**depth leaves;
    depth 9 is gigabytes once stringified). Depth 5 keeps the test Hub's own JSON small."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, depth):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return (
        f"---\nbase_model: {BASE_ID}\nbase_model_relation: adapter\nlibrary_name: peft\n"
        + "\n".join(lines)
        + f"\ntags: [*a{depth - 1}]\n---\nbomb\n"
    )


def _adapter(src: Path, out: Path, kind: str) -> Path:
    """A copy of the good tiny adapter with a card, made hostile as ``kind`` says."""
    shutil.copytree(src, out)
    build_adapter_card(base_model=BASE_ID, task="dates").save(out)
    config_path, weights = out / "adapter_config.json", out / "adapter_model.safetensors"
    config = json.loads(config_path.read_text())
    if kind == "not-adapter":  # a model repo: config.json and a big weights file
        config_path.unlink()
        weights.unlink()
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"\0" * 300_000)
    elif kind == "pickle-only":
        weights.rename(out / "adapter_model.bin")
    elif kind == "bomb":
        (out / "README.md").write_text(_bomb())
    elif kind == "huge-card":
        (out / "README.md").write_text("---\nbase_model: acme/tiny-base\n---\n" + "x" * 1_100_000)
    elif kind == "bad-config":
        config_path.write_text('{"peft_type": "LORA", "r": 4,')
    elif kind in ("ia3", "dora"):
        config.update(peft_type="IA3") if kind == "ia3" else config.update(use_dora=True)
        config_path.write_text(json.dumps(config))
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif kind == "extra-files":  # an adapter published with a large file beside it
        (out / "optimizer.pt").write_bytes(b"\0" * 300_000)
    return out


@dataclass(frozen=True)
class Case:
    id: str
    action: Callable[[Registry], object]
    error: type[Exception]
    quoted: str
    repo: tuple[str, str] | None = None  # (repo id, adapter kind) put in the store first
    private: bool = False
    max_bytes: int | None = None
    weights_fetched: bool = False  # the weights had to be read to find the fault


CASES = [
    Case("trailing-newline", lambda r: r.resolve(f"{GOOD}\n"), InvalidNameError, r"good\n'"),
    Case("leading-space", lambda r: r.resolve(f" {GOOD}"), InvalidNameError, "' evil/good'"),
    Case("tab-in-name", lambda r: r.resolve("evil/go\tod"), InvalidNameError, r"go\tod"),
    Case("dotdot-repo", lambda r: r.resolve("evil/../good"), InvalidNameError, "'evil/../good'"),
    Case("dotdot-revision", lambda r: r.resolve(f"{GOOD}@.."), InvalidNameError, "'..'"),
    Case("revision-newline", lambda r: r.resolve(f"{GOOD}@main\n"), InvalidNameError, r"main\n"),
    Case("sha-newline", lambda r: r.resolve(f"{GOOD}@{'a' * 40}\n"), InvalidNameError, r"a\n'"),
    Case(
        "alias-newline",
        lambda r: r.set_alias(GOOD, "prod\n"),
        InvalidNameError,
        r"'prod\n'",
        repo=(GOOD, "good"),
    ),
    Case(
        "namespace-newline",
        lambda r: r.sync(author="evil\n", progress=False),
        InvalidNameError,
        r"'evil\n'",
    ),
    Case(
        "metric-newline",
        lambda r: r.search(metric="dates/exact_match\n"),
        ConfigError,
        r"exact_match\n'",
    ),
    Case(
        "non-adapter-repo",
        lambda r: r.resolve("evil/model"),
        ArtifactError,
        "is not an adapter (no adapter_config.json)",
        repo=("evil/model", "not-adapter"),
    ),
    Case(
        "oversized-adapter",
        lambda r: r.resolve(GOOD),
        ArtifactError,
        "over the limit of 2000 bytes for one adapter (LORADOCK_MAX_ADAPTER_BYTES)",
        repo=(GOOD, "good"),
        max_bytes=2000,
    ),
    Case(
        "pickle-only-adapter",
        lambda r: r.resolve("evil/pickle"),
        UnsafeArtifactError,
        "only as adapter_model.bin, a pickle file",
        repo=("evil/pickle", "pickle-only"),
    ),
    Case(
        "yaml-bomb-card",
        lambda r: r.resolve("evil/bomb"),
        CardError,
        "The card (README.md) of evil/bomb@",
        repo=("evil/bomb", "bomb"),
    ),
    Case(
        "card-over-a-mebibyte",
        lambda r: r.resolve("evil/huge"),
        CardError,
        "The card of evil/huge@",
        repo=("evil/huge", "huge-card"),
    ),
    Case(
        "config-not-json",
        lambda r: r.resolve("evil/badconfig"),
        ArtifactError,
        "/adapter_config.json' is not valid JSON",
        repo=("evil/badconfig", "bad-config"),
    ),
    Case(
        "not-lora",
        lambda r: r.resolve("evil/ia3"),
        IncompatibleAdapterError,
        "peft_type 'IA3' is not supported",
        repo=("evil/ia3", "ia3"),
    ),
    Case(
        "dora",
        lambda r: r.resolve("evil/dora"),
        IncompatibleAdapterError,
        "use_dora=True",
        repo=("evil/dora", "dora"),
    ),
    Case(
        "rank-over-limit",
        lambda r: r.resolve(GOOD, max_rank=2),
        IncompatibleAdapterError,
        "rank 4 is over the limit of 2",
        repo=(GOOD, "good"),
    ),
    Case(
        "private-repo-by-default",
        lambda r: r.resolve("evil/secret"),
        AdapterNotFoundError,
        "No repo 'evil/secret' in the",
        repo=("evil/secret", "good"),
        private=True,
    ),
    Case(
        "truncated-weights",
        lambda r: r.resolve("evil/truncated"),
        ArtifactError,
        "'evil/truncated@",
        repo=("evil/truncated", "truncated"),
        weights_fetched=True,
    ),
]


@pytest.fixture(params=["local", "hf"])
def hub(request, tmp_path):
    """``(store, test Hub server or None)``."""
    if request.param == "local":
        return LocalHub(tmp_path / "hub"), None
    server = request.getfixturevalue("hub_server")
    return HfHub(endpoint=server.url, token=server.token), server


@pytest.fixture
def store(hub):
    return hub[0]


def _registry(store, tmp_path: Path, **settings) -> Registry:
    root = tmp_path / "server"
    return Registry(
        store,
        settings=Settings(
            home=root,
            hub_dir=tmp_path / "hub",
            index_path=root / "index.sqlite",
            cache_dir=root / "snapshots",
            **settings,
        ),
    )


def _put(store, tmp_path: Path, adapter_dir: Path, repo_id: str, kind: str, *, private=False):
    folder = _adapter(adapter_dir, tmp_path / "src" / repo_id, kind)
    store.create_repo(repo_id, private=private)
    return store.upload_folder(repo_id, folder, commit_message=kind).sha


def _weights_fetched(reg: Registry, server) -> list[str]:
    """Weight files in the snapshot cache, and weight downloads the test Hub served."""
    found = [str(p) for p in reg.settings.cache_dir.rglob("*") if p.name in WEIGHT_NAMES]
    if server is not None:
        found += [p for _, p in server.requests if "/resolve/" in p and p.endswith(_WEIGHTS)]
    return found


_WEIGHTS = tuple(f"/{name}" for name in WEIGHT_NAMES)


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused(case, hub, tmp_path, adapter_dir):
    store, server = hub
    if case.repo:
        _put(store, tmp_path, adapter_dir, *case.repo, private=case.private)
    limits = {"max_adapter_bytes": case.max_bytes} if case.max_bytes else {}
    reg = _registry(store, tmp_path, **limits)
    with pytest.raises(case.error) as info:
        case.action(reg)
    message = str(info.value)
    assert case.quoted in message, message
    assert str(tmp_path) not in message and "Traceback" not in message, message
    assert bool(_weights_fetched(reg, server)) == case.weights_fetched
    assert not list(reg.settings.cache_dir.rglob(".check-*"))  # no scratch folder left


def test_the_control_resolves_with_only_the_adapter_files(store, tmp_path, adapter_dir):
    sha = _put(store, tmp_path, adapter_dir, "evil/extra", "extra-files")
    resolved = _registry(store, tmp_path).resolve("evil/extra")
    assert resolved.sha == sha and resolved.artifact.rank == 4
    held = sorted(p.name for p in resolved.path.iterdir() if not p.name.startswith("."))
    assert held == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


def test_private_repos_resolve_only_when_allowed(store, tmp_path, adapter_dir):
    sha = _put(store, tmp_path, adapter_dir, "evil/secret", "good", private=True)
    missing = _registry(store, tmp_path)
    with pytest.raises(AdapterNotFoundError) as refused:
        missing.resolve("evil/secret")
    with pytest.raises(AdapterNotFoundError) as absent:
        missing.resolve("evil/absent")
    # A private repo reads exactly as a missing one.
    assert str(refused.value) == str(absent.value).replace("evil/absent", "evil/secret")

    allowed = _registry(store, tmp_path, allow_private=True)
    assert allowed.resolve(f"evil/secret@{sha}").sha == sha
    # The allowed caller's snapshot is now cached; the pinned sha is still refused to others.
    with pytest.raises(AdapterNotFoundError, match="LORADOCK_ALLOW_PRIVATE"):
        missing.resolve(f"evil/secret@{sha}")


def test_sync_indexes_adapter_files_only_and_skips_oversized(store, tmp_path, adapter_dir):
    _put(store, tmp_path, adapter_dir, "evil/extra", "extra-files")
    _put(store, tmp_path, adapter_dir, "evil/model", "not-adapter")
    reg = _registry(store, tmp_path, max_adapter_bytes=5_000_000)
    report = reg.sync(author="evil", progress=False)
    assert report.errors == [] and {r.repo_id for r in reg.search(kind=None)} == {
        "evil/extra",
        "evil/model",
    }
    cached = {p.name for p in reg.settings.cache_dir.rglob("*") if p.is_file()}
    assert "optimizer.pt" not in cached and "model.safetensors" not in cached

    small = _registry(store, tmp_path / "small", max_adapter_bytes=2000)
    report = small.sync(author="evil", progress=False)
    assert len(report.errors) == 1 and "over the limit of 2000 bytes" in report.errors[0]


HOME = str(Path.home())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("training", {"job": {"output_dir": "{tmp}/runs/dates", "data": {"train": "~/d.jsonl"}}}),
        ("training", {"job_yaml": "output_dir: {tmp}/runs/dates\nseed: 0\n"}),
        ("body", "Trained in `{tmp}/runs/dates` from file://{tmp}/data.jsonl.\n"),
        ("extra", {"source": "C:\\Users\\alice\\runs\\dates"}),
        ("body", f"Saved to {HOME}/runs/dates\n"),
    ],
    ids=["output-dir-and-home", "job-yaml", "body", "windows-path", "home-in-body"],
)
def test_published_card_carries_no_local_path(field, value, store, tmp_path, adapter_dir):
    tmp = str(tmp_path)
    value = json.loads(json.dumps(value).replace("{tmp}", tmp.replace("\\", "\\\\")))
    card = build_adapter_card(base_model=BASE_ID, **{field: value})
    reg = _registry(store, tmp_path)
    published = reg.publish(adapter_dir, "evil/paths", card=card)
    text = (reg.resolve(published.name).path / "README.md").read_text()
    for leaked in (tmp, "~/", "C:\\", "file:", HOME + "/"):
        assert leaked not in text, leaked
    assert "dates" in text or "d.jsonl" in text  # the last component stays, for a re-run


@pytest.mark.parametrize(
    ("variable", "value", "quoted"),
    [
        ("LORADOCK_MAX_ADAPTER_BYTES", "lots", "LORADOCK_MAX_ADAPTER_BYTES='lots'"),
        ("LORADOCK_MAX_ADAPTER_BYTES", "0", "LORADOCK_MAX_ADAPTER_BYTES=0"),
        ("LORADOCK_ALLOW_PRIVATE", "maybe", "LORADOCK_ALLOW_PRIVATE='maybe'"),
    ],
)
def test_bad_settings_are_refused_by_name(monkeypatch, variable, value, quoted):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=quoted):
        get_settings()


def test_default_settings_are_the_safe_ones():
    settings = get_settings()
    assert settings.allow_private is False and settings.max_adapter_bytes == 2 * 1024**3
