"""Training on a CUDA GPU: QLoRA (4-bit NF4 through bitsandbytes' CUDA kernels, bf16 compute) and
packed LoRA with bf16, end to end: loss falls, publish, reload, the logits come back.

Marked ``gpu``: skipped without a GPU. ``LORADOCK_GPU_TEST_DEVICE=cpu`` runs the same logic on a
CPU (to check the tests themselves on a machine without one).
"""

from __future__ import annotations

import pytest
import torch

from loradock.training.config import JobConfig
from loradock.training.job import finish, train
from loradock.training.preflight import preflight
from loradock.training.session import build_session
from tests.helpers.gpu import gpu_test_device
from tests.helpers.training import probe_ids

pytestmark = pytest.mark.gpu
DEVICE = gpu_test_device()


def _probe_logits(model, tokenizer) -> torch.Tensor:
    ids = probe_ids(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        return model(input_ids=torch.tensor([ids], device=device)).logits.float().cpu()


def _assert_reproduces(trained: torch.Tensor, again: torch.Tensor, base: torch.Tensor) -> None:
    """bf16 kernels are not bit-exact between a training model and a fresh load: the reloaded
    adapter must sit far closer to the trained logits than the bare base does."""
    drift = (trained - again).abs().max().item()
    learned = (trained - base).abs().max().item()
    assert drift < 0.05 * max(learned, 1.0), (drift, learned)
    assert (trained.argmax(-1) == again.argmax(-1)).float().mean() >= 0.9
    assert learned > 0.1, "training changed nothing: the check above would be empty"


@pytest.mark.parametrize(
    ("quantization", "packing", "repo"),
    [
        ("nf4", False, "acme/tiny-dates-qlora-gpu"),
        ("none", "auto", "acme/tiny-dates-lora-gpu"),
    ],
    ids=["qlora", "lora-packed"],
)
def test_train_publish_reload_on_the_gpu(
    make_job, tiny_registry_base, registry, quantization, packing, repo
):
    if quantization == "nf4":
        pytest.importorskip("bitsandbytes")
    from peft import PeftModel

    from loradock.modeling import load_base

    job = JobConfig.from_dict(
        make_job(
            quantization={"mode": quantization},
            trainer={"max_steps": 16, "learning_rate": 3e-2, "packing": packing},
            publish={"repo_id": repo},
        )
    )
    plan = preflight(job, registry=registry)
    assert plan.device == DEVICE
    session = build_session(plan, progress=False)
    params = list(session.model.parameters())
    assert {p.device.type for p in params} == {torch.device(DEVICE).type}
    if quantization == "nf4":
        import bitsandbytes as bnb

        assert getattr(session.model.base_model.model, "is_loaded_in_4bit", False)
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in session.model.modules())
    if DEVICE == "cuda":
        assert plan.bf16, "an H100/H200-class GPU trains in bf16"
        # On a GPU, packing: auto always packs (small batches leave the device idle).
        assert session.packing.packing is (packing == "auto")

    summary = train(session)
    assert summary["global_step"] == 16
    assert summary["last_loss"] < summary["first_loss"] - 0.2, summary
    trained = _probe_logits(session.model, session.tokenizer)
    result = finish(session, registry=registry)
    card = registry.resolve(result.repo_id).card
    recorded = card.training["hyperparameters"]
    assert recorded["quantization"] == quantization
    assert (recorded["packing"], recorded["device"]) == (session.packing.packing, DEVICE)

    # The published adapter on a freshly loaded base (4-bit again for QLoRA) gives the logits.
    base = registry.resolve_base(tiny_registry_base)
    quant = "nf4" if quantization == "nf4" else None
    dtype = plan.dtype_name if quant else plan.weights_dtype  # as the job loaded it
    model, tokenizer = load_base(base.path, dtype=dtype, device=DEVICE, quantization=quant)
    bare = _probe_logits(model, tokenizer)
    reloaded = PeftModel.from_pretrained(model, registry.resolve(result.repo_id).path)
    _assert_reproduces(trained, _probe_logits(reloaded, tokenizer), bare)
