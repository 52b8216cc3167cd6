"""Real training runs on the tiny model: loss falls, publish, reload, resume, QLoRA."""

from __future__ import annotations

import json

import pytest
import torch

from loradock.registry.card import AdapterCard
from loradock.registry.local_paths import strip_local_paths
from loradock.training.config import JobConfig
from loradock.training.job import finish, run_job, train
from loradock.training.preflight import preflight
from loradock.training.session import build_session
from tests.helpers.training import probe_ids


def _probe_logits(model, tokenizer) -> torch.Tensor:
    ids = probe_ids(tokenizer)
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.float()


def test_train_publish_and_reload_reproduces_logits(
    make_job, tmp_path, tiny_registry_base, registry
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = JobConfig.from_dict(make_job())
    session = build_session(preflight(job, registry=registry), progress=False)
    summary = train(session)
    # Loss falls: the last logged loss is well below the first.
    assert summary["global_step"] == 6
    assert summary["last_loss"] < summary["first_loss"] - 0.2, summary
    assert summary["tokens_per_second"] > 0
    trained = _probe_logits(session.model, session.tokenizer)
    result = finish(session, registry=registry)

    assert result.repo_id == "acme/tiny-dates" and len(result.sha) == 40
    resolved = registry.resolve(f"{result.repo_id}@{result.sha}")
    files = {p.name for p in resolved.path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= files
    # The loss plot is in the repo (resolve fetches only what serving needs): a real PNG.
    published = {
        f.path for f in registry.store.repo_info(result.repo_id, revision=result.sha).files
    }
    assert "training_loss.png" in published
    plot = registry.store.snapshot_download(
        result.repo_id,
        revision=result.sha,
        local_dir=tmp_path / "plot",
        files=["training_loss.png"],
    )
    assert (plot / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A published adapter loads back with PeftModel and reproduces the trained logits.
    base = registry.resolve_base(tiny_registry_base)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=session.model.dtype)
    reloaded = PeftModel.from_pretrained(model, resolved.path)
    # The trainer runs the model under bf16 autocast where the hardware has it; so does this.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=session.plan.bf16):
        again = _probe_logits(reloaded, session.tokenizer)
    assert torch.allclose(trained, again, atol=1e-3), (trained - again).abs().max()
    assert not torch.allclose(
        _probe_logits(model.__class__.from_pretrained(base.path), session.tokenizer),
        again,
        atol=1e-3,
    )

    # The card: base + revision, data hash, versions, seed, model-index, the job to re-run.
    card = AdapterCard.from_text((resolved.path / "README.md").read_text())
    assert card.base_model == tiny_registry_base and card.base_revision == base.sha
    assert card.task == "dates"
    metrics = {m.metric for m in card.eval_results}
    assert {"exact_match", "perplexity"} <= metrics
    training = card.training
    assert training["dataset"]["sha256"].startswith("sha256:")
    assert training["seed"] == 0 and "trl" in training["libraries"]
    assert training["hyperparameters"]["lora"]["r"] == 8
    assert "training_loss.png" in card.body and "```yaml" in card.body
    # The card holds the job to re-run, with this machine's paths cut to their last part.
    rerun = JobConfig.from_dict(training["job"])
    assert rerun.to_dict() == strip_local_paths(json.loads(json.dumps(job.to_dict(), default=str)))
    assert str(tmp_path) not in (resolved.path / "README.md").read_text()
    text = (resolved.path / "README.md").read_text()
    assert "model-index" in text and "base_model: local/tiny-base" in text

    # Indexed: search finds it by task and base.
    found = registry.search(task="dates", base_model=tiny_registry_base)
    assert [r.repo_id for r in found] == ["acme/tiny-dates"]

    heldout = result.metrics["heldout"]
    assert heldout["examples"] == 4 and set(heldout["base"]["metrics"]) == {"exact_match"}
    assert heldout["adapter"]["perplexity"] < heldout["base"]["perplexity"]
    log = (job.output_dir / "loss_log.jsonl").read_text().splitlines()
    assert sum("loss" in json.loads(line) for line in log) >= 6


def test_resume_continues_from_the_last_checkpoint(
    make_job, tmp_path, tiny_registry_base, registry
):
    first = JobConfig.from_dict(
        make_job(
            trainer={"max_steps": 4, "save_steps": 2, "report_to": "tensorboard"},
            publish={"enabled": False},
            eval={"enabled": False},
        )
    )
    result = run_job(first, registry=registry, progress=False)
    assert result.metrics["train"]["global_step"] == 4
    assert (first.output_dir / "checkpoints" / "checkpoint-4").is_dir()
    # TensorBoard when asked: event files under the checkpoints' runs/ folder.
    assert list((first.output_dir / "checkpoints").rglob("events.out.tfevents.*"))
    # "Interrupted" at step 4 of a 6-step job: resume picks up at checkpoint-4.
    second = JobConfig.from_dict(
        make_job(
            trainer={"max_steps": 6, "save_steps": 2},
            publish={"enabled": False},
            eval={"enabled": False},
        )
    )
    resumed = run_job(second, resume=True, registry=registry, progress=False)
    summary = resumed.metrics["train"]
    assert summary["resumed_from"].endswith("checkpoint-4")
    assert summary["global_step"] == 6
    steps = [
        json.loads(line).get("step")
        for line in (second.output_dir / "loss_log.jsonl").read_text().splitlines()
    ]
    assert 5 in steps and 6 in steps


def test_qlora_runs_on_the_cpu(make_job, tmp_path, tiny_registry_base, registry):
    pytest.importorskip("bitsandbytes")
    job = JobConfig.from_dict(
        make_job(
            quantization={"mode": "nf4"},
            trainer={"max_steps": 3, "learning_rate": 5e-3},
            publish={"repo_id": "acme/tiny-dates-qlora"},
        )
    )
    plan = preflight(job, registry=registry)
    session = build_session(plan, progress=False)
    assert getattr(session.model.base_model.model, "is_loaded_in_4bit", False)
    summary = train(session)
    assert summary["global_step"] == 3 and summary["last_loss"] == summary["last_loss"]  # not NaN
    result = finish(session, registry=registry)
    card = registry.resolve(result.repo_id).card
    assert card.training["hyperparameters"]["quantization"] == "nf4"
    assert "qlora" in card.tags
