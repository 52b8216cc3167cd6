"""What vLLM can serve: LoRA limits derived from the registry, and the checks that refuse an
adapter BEFORE it reaches vLLM.

vLLM sizes its LoRA buffers once, at engine start (``max_lora_rank``, ``max_loras`` slots in a
batch, ``max_cpu_loras`` kept in host memory), and an adapter that does not fit fails deep in a
worker with a stack trace. So the limits are derived up front from the registry's metadata of
the adapters a server may serve, and every adapter is checked against them here, with a message
that says what to change. The feature checks mirror ``vllm/lora/peft_helper.py``
(``PEFTHelper._validate_features``) of vllm 0.32.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loradock.errors import ConfigError
from loradock.registry.artifact import AdapterArtifact, read_safetensors_header

# vllm.config.lora.MaxLoRARanks: the only values vLLM accepts for max_lora_rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# PEFT inits that only set the starting weights (the saved adapter is plain LoRA).
_PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def round_up_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (vLLM pads smaller adapters)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ConfigError(
        "Invalid LoRA rank",
        [f"rank {rank} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}"],
    )


@dataclass(frozen=True)
class LoraLimits:
    """The LoRA sizes a vLLM engine is started with."""

    max_lora_rank: int
    max_loras: int  # adapters in one batch
    max_cpu_loras: int  # adapters kept loaded (host memory); LRU beyond that

    def __post_init__(self) -> None:
        problems = []
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            problems.append(
                f"max_lora_rank={self.max_lora_rank!r} must be one of "
                f"{', '.join(map(str, VLLM_LORA_RANKS))} (vLLM's allowed ranks)"
            )
        if not isinstance(self.max_loras, int) or self.max_loras < 1:
            problems.append(f"max_loras={self.max_loras!r} must be an integer >= 1")
        floor = max(self.max_loras, 1) if isinstance(self.max_loras, int) else 1
        if not isinstance(self.max_cpu_loras, int) or self.max_cpu_loras < floor:
            problems.append(
                f"max_cpu_loras={self.max_cpu_loras!r} must be an integer >= 1 and >= "
                f"max_loras ({self.max_loras!r})"
            )
        if problems:
            raise ConfigError("Invalid vLLM LoRA limits", problems)


def derive_lora_limits(
    ranks: Iterable[int | None],
    *,
    max_loaded: int,
    max_cpu_adapters: int,
    max_lora_rank: int | None = None,
    max_loras: int | None = None,
    max_cpu_loras: int | None = None,
) -> LoraLimits:
    """Limits for the adapters a server may serve (their ranks), unless set explicitly.

    - ``max_lora_rank``: the largest rank among them, rounded up to a rank vLLM accepts
      (16, vLLM's default, when none is known yet).
    - ``max_loras``: as many as may be served, capped by the server's ``max_loaded``; each slot
      costs ``max_lora_rank`` x hidden size per layer, so it is not larger than needed.
    - ``max_cpu_loras``: all of them if the host cache allows, at least ``max_loras``.
    """
    known = [int(r) for r in ranks if r]
    count = len(known)
    rank = max_lora_rank or round_up_rank(max(known, default=16))
    loras = max_loras or max(1, min(count or max_loaded, max_loaded))
    cpu = max_cpu_loras or max(loras, min(max(count, max_loaded), max(max_cpu_adapters, 1)))
    return LoraLimits(max_lora_rank=rank, max_loras=loras, max_cpu_loras=cpu)


def servable_modules(model_folder: str | Path) -> frozenset[str]:
    """Module names vLLM can put LoRA on in this model: every module with a 2-D weight.

    vLLM adds LoRA to all linear layers and to the embeddings (``vllm/lora/utils.py``
    ``get_supported_lora_modules``); 2-D weights are exactly those (norms and biases are 1-D).
    Read from the safetensors headers, so nothing is loaded.
    """
    names: set[str] = set()
    for file in sorted(Path(model_folder).glob("*.safetensors")):
        for tensor, info in read_safetensors_header(file).items():
            if tensor.endswith(".weight") and len(info.shape) == 2:
                names.add(tensor[: -len(".weight")].rsplit(".", 1)[-1])
    return frozenset(names)


def vllm_adapter_problems(
    artifact: AdapterArtifact,
    *,
    max_lora_rank: int,
    servable: frozenset[str] | None = None,
) -> list[str]:
    """Every reason vLLM would refuse this adapter on an engine started with these limits."""
    problems: list[str] = []
    config = artifact.config
    if artifact.peft_type != "LORA":
        problems.append(f"peft_type {artifact.peft_type!r}: vLLM serves only LORA adapters")
    if artifact.weights_file != "adapter_model.safetensors":
        problems.append(
            f"weights file {artifact.weights_file!r}: only adapter_model.safetensors is served"
        )
    rank = artifact.max_rank
    if rank > max_lora_rank:
        problems.append(
            f"rank {rank} is above this server's max_lora_rank {max_lora_rank}: restart it "
            f"with --max-lora-rank {round_up_rank(rank) if rank <= 512 else rank} "
            "(or serve this adapter with --engine peft)"
        )
    if artifact.modules_to_save:
        problems.append(
            f"modules_to_save {list(artifact.modules_to_save)!r}: vLLM cannot serve full "
            "module copies; merge the adapter (loradock merge) and serve it with --merged"
        )
    extra = artifact.extra_tensors()
    if extra and not artifact.modules_to_save:
        problems.append(
            f"{len(extra)} non-LoRA tensor(s) such as {extra[0]!r} (resized embeddings or "
            "saved modules): merge the adapter and serve it with --merged"
        )
    for key, what in (
        ("use_dora", "DoRA (use_dora)"),
        ("lora_bias", "LoRA bias (lora_bias)"),
        ("layer_replication", "layer_replication"),
        ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"),
        ("use_qalora", "QALoRA (use_qalora)"),
    ):
        if config.get(key):
            problems.append(f"{what}: not supported by vLLM; serve it with --engine peft")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _PLAIN_INITS:
        problems.append(
            f"init_lora_weights={init!r} changes the base weights (PiSSA/OLoRA/LoftQ style): "
            "convert it to plain LoRA with PEFT before serving it with vLLM"
        )
    if servable is not None:
        unknown = sorted(m for m in artifact.target_modules if m not in servable)
        if unknown:
            problems.append(
                f"target modules {unknown!r} are not linear layers or embeddings of the base "
                f"model (vLLM can serve: {', '.join(sorted(servable))})"
            )
    return problems
