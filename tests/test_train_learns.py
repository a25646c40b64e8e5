"""Training learns: the loss falls, the trained tensors move away from their initial values, and
the same checks fail for a run whose learning rate is (as good as) zero.

Every optimisation setting is given explicitly here (not taken from the tiny preset, which is
being retuned), so these tests pin the behaviour of the training loop, not of a preset.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import TEST_TINY_SPEC_KW, FakeSource

from mixcritic.critics.llm.checkpoint import read_trained
from mixcritic.critics.llm.train import TrainRequest, run_training

torch.set_num_threads(1)

STEPS = 16
SETTINGS = (
    ("learning_rate", 3e-3), ("weight_decay", 0.0), ("batch_size", 4), ("grad_accum", 1), ("max_grad_norm", 1.0),
    ("lr_scheduler", "constant"), ("warmup_steps", 0), ("max_steps", STEPS), ("epochs", 1.0), ("logging_steps", 1),
    ("save_steps", 1), ("save_total_limit", STEPS), ("eval_steps", 0), ("workers", 0), ("seed", 0),
)
MODEL = (("tiny_spec", TEST_TINY_SPEC_KW), ("projector_hidden", 32), ("lora_r", 4), ("lora_alpha", 8),
         ("audio_pool", 4), ("gradient_checkpointing", False))


def train(out, learning_rate: float) -> dict:
    overrides = tuple((k, learning_rate if k == "learning_rate" else v) for k, v in SETTINGS)
    return run_training(TrainRequest(data_dir=out, out_dir=out, preset="tiny", train_overrides=overrides,
                                     model_overrides=MODEL, device="cpu", progress=False), FakeSource())


def learning_problems(summary: dict, run_dir) -> list[str]:
    """What says this run did not learn (empty when it did)."""
    problems = []
    losses = [h["lm_loss"] for h in summary["log_history"] if "lm_loss" in h]
    if len(losses) != STEPS:
        problems.append(f"{len(losses)} logged losses for {STEPS} steps")
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    if not last < 0.5 * first:
        problems.append(f"answer loss did not halve: {first:.3f} -> {last:.3f}")
    tensors = read_trained(run_dir / "model")
    lora_b = [t for k, t in tensors.items() if k.startswith("lora.") and "lora_B" in k]
    # peft starts every lora_B at exactly zero, so the adapter's change is its size
    if not lora_b or max(float(t.abs().max()) for t in lora_b) < 1e-3:
        problems.append("LoRA B matrices are still at their zero initialisation")
    # the projector and layer weights (random init): compared with the checkpoint after step 1
    early = read_trained(run_dir / "checkpoint-1")
    for group in ("projector", "layer_weights"):
        moved = max(float((tensors[k] - early[k]).abs().max()) for k in tensors if k.startswith(group + "."))
        if moved < 1e-4:
            problems.append(f"{group} did not move after step 1 (max change {moved:.2e})")
    return problems


@pytest.fixture(scope="module")
def learned(tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("learns") / "run"
    return train(out, 3e-3), out


def test_training_lowers_the_loss_and_moves_the_trained_tensors(learned):
    summary, out = learned
    assert learning_problems(summary, out) == []
    assert summary["global_step"] == STEPS
    assert summary["final_loss"] < summary["first_loss"]


def test_a_run_with_a_negligible_learning_rate_fails_the_same_checks(tiny_base, tmp_path):
    # lr 0 is refused by TrainSettings (it must be > 0), so "zero" is 1e-12: nothing can be learned
    summary = train(tmp_path / "run", 1e-12)
    problems = learning_problems(summary, tmp_path / "run")
    assert any("did not halve" in p for p in problems), problems
    assert any("zero initialisation" in p for p in problems), problems
    assert any("projector did not move" in p for p in problems), problems
