"""Training, checkpoints, resume and inference on the tiny models (CPU, seconds)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest
import torch
from model_helpers import TEST_TINY_SPEC_KW, FakeSource

from mixcritic.errors import ModelError
from mixcritic.critics.llm.checkpoint import COMPLETE_MARKER, mark_complete, read_trained, save_trained
from mixcritic.critics.llm.train import TrainRequest, run_training

torch.set_num_threads(1)

SPEC = (("tiny_spec", TEST_TINY_SPEC_KW), ("encoder_source", "tiny-mert"), ("quantize_4bit", True), ("audio_pool", 4),
        ("standardize_clips", 0))
"""The tiny random MERT in 4-bit QLoRA at pool 4 (the preset uses log-mel): keeps the real MERT loading path tested."""
FAST = (("max_steps", 6), ("save_steps", 3), ("eval_steps", 3), ("workers", 0), ("logging_steps", 1))


@pytest.fixture(scope="module")
def full_run(tiny_base, tmp_path_factory):
    """A 6-step tiny run with checkpoints at steps 3 and 6."""
    out = tmp_path_factory.mktemp("run") / "run"
    summary = run_training(TrainRequest(data_dir=out, out_dir=out, preset="tiny", train_overrides=FAST, model_overrides=SPEC,
                                        device="cpu", progress=False), FakeSource())
    return out, summary


def test_run_writes_complete_checkpoints_and_summary(full_run):
    out, summary = full_run
    assert summary["global_step"] == 6
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    for folder in (out / "checkpoint-3", out / "checkpoint-6", out / "model"):
        assert (folder / COMPLETE_MARKER).is_file()
    on_disk = json.loads((out / "train_summary.json").read_text())
    assert on_disk["global_step"] == 6 and on_disk["final_eval_loss"] is not None
    logs = [h for h in summary["log_history"] if "loss" in h]
    assert len(logs) == 6
    for log in logs:  # both loss parts are logged and add up (weight 0.05)
        assert log["loss"] == pytest.approx(log["lm_loss"] + 0.05 * log["aux_loss"], rel=1e-4)
    evals = [h for h in summary["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in evals] == [3, 6] and all("eval_aux_loss" in h for h in evals)


def test_checkpoint_holds_only_trained_tensors_without_pickle(full_run, tiny_base):
    out, _ = full_run
    folder = out / "checkpoint-6"
    names = {p.name for p in folder.iterdir()}
    assert names == {"COMPLETE", "mixcritic.json", "trained.safetensors", "optimizer.safetensors", "optimizer.json",
                     "scheduler.json", "rng_state_0.safetensors", "rng_state_0.json", "trainer_state.json"}
    assert {p.name for p in (out / "model").iterdir()} == {"COMPLETE", "mixcritic.json", "trained.safetensors"}
    tensors = read_trained(folder)
    groups = {k.split(".")[0] for k in tensors}
    assert groups == {"layer_weights", "projector", "lora"}
    assert all("lora_A" in k or "lora_B" in k for k in tensors if k.startswith("lora."))
    from safetensors.torch import load_file

    base = load_file(str(tiny_base[1] / "model.safetensors"))
    trained_count = sum(t.numel() for k, t in tensors.items() if k.startswith("lora."))
    assert trained_count < 0.5 * sum(t.numel() for t in base.values())
    settings = json.loads((folder / "mixcritic.json").read_text())
    assert settings["sample_rate_hz"] == 24000 and settings["segment_s"] == 1.0
    assert settings["target_lufs"] == -23.0 and settings["template_version"] == "test-1"
    assert settings["audio_pool"] == 4 and settings["llm_source"] == str(tiny_base[1])


def test_resume_skips_interrupted_save_and_reproduces_the_run(full_run, tmp_path):
    out, summary = full_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "model")
    (copy / "checkpoint-6" / COMPLETE_MARKER).unlink()  # the save at step 6 was interrupted
    resumed = run_training(TrainRequest(data_dir=copy, out_dir=copy, preset="tiny", train_overrides=FAST, model_overrides=SPEC,
                                        resume=True, device="cpu", progress=False), FakeSource())
    assert resumed["resumed_from"] == str(copy / "checkpoint-3")
    assert resumed["global_step"] == 6
    assert [h["step"] for h in resumed["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]
    first, again = read_trained(out / "model"), read_trained(copy / "model")
    assert first.keys() == again.keys()
    for key in first:  # same data order, optimizer and RNG state -> the same weights
        assert torch.equal(first[key], again[key]), key


def test_feature_standardisation_is_fitted_saved_and_reloaded(tiny_base, tmp_path):
    from mixcritic.critics.llm.inference import load_critic

    out = tmp_path / "run"
    run_training(TrainRequest(data_dir=out, out_dir=out, preset="tiny", device="cpu", progress=False,
                              train_overrides=(("max_steps", 1), ("save_steps", 1), ("eval_steps", 0), ("workers", 0)),
                              model_overrides=SPEC + (("standardize_clips", 4),)), FakeSource())
    tensors = read_trained(out / "model")
    assert tensors["feature_norm.mean"].shape == tensors["feature_norm.std"].shape
    assert float(tensors["feature_norm.std"].min()) > 0 and float(tensors["feature_norm.mean"].abs().max()) > 0
    critic = load_critic(out, device="cpu")
    assert torch.equal(critic.model.feature_norm.std, tensors["feature_norm.std"])


def test_existing_run_needs_resume(full_run):
    out, _ = full_run
    with pytest.raises(ModelError, match="--resume"):
        run_training(TrainRequest(data_dir=out, out_dir=out, preset="tiny", train_overrides=FAST, model_overrides=SPEC, device="cpu",
                                  progress=False), FakeSource())


def test_resume_with_different_model_settings_is_refused(full_run, tmp_path):
    out, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with pytest.raises(ModelError, match="audio_pool"):
        run_training(TrainRequest(data_dir=copy, out_dir=copy, preset="tiny", train_overrides=FAST, 
                                  model_overrides=SPEC + (("audio_pool", 2),), resume=True, device="cpu", progress=False),
                     FakeSource())


@pytest.mark.parametrize(("name", "value", "option"), [
    ("batch_size", 2, "--batch-size"), ("grad_accum", 2, "--grad-accum"), ("learning_rate", 1e-3, "--lr"),
    ("epochs", 2.0, "--epochs"),
])
def test_resume_with_changed_optimisation_settings_is_refused(full_run, tmp_path, name, value, option):
    out, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with pytest.raises(ModelError, match=f"{option} .*was .*start a new --out"):
        run_training(TrainRequest(data_dir=copy, out_dir=copy, preset="tiny", train_overrides=FAST + ((name, value),),
                                  model_overrides=SPEC, resume=True, device="cpu", progress=False), FakeSource())


def test_resume_of_a_run_that_reached_max_steps_is_refused(full_run, tmp_path):
    """The Trainer would otherwise train one step beyond --max-steps (seen as checkpoint-21 of a 20-step run)."""
    out, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with pytest.raises(ModelError, match="already at --max-steps 6"):
        run_training(TrainRequest(data_dir=copy, out_dir=copy, preset="tiny", train_overrides=FAST, model_overrides=SPEC,
                                  resume=True, device="cpu", progress=False), FakeSource())


def test_only_rank_zero_removes_interrupted_checkpoints(full_run, tmp_path):
    """Under torchrun every rank used to delete the same folder (FileNotFoundError on all but one)."""
    from mixcritic.critics.llm.train import prepare_run_dir, resolve_settings

    out, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "checkpoint-6" / COMPLETE_MARKER).unlink()
    request = TrainRequest(data_dir=copy, out_dir=copy, preset="tiny", train_overrides=FAST, model_overrides=SPEC,
                           resume=True, device="cpu")
    train, settings = resolve_settings(request, FakeSource())
    calls = []
    found = prepare_run_dir(copy, True, settings, train, is_main=False, barrier=lambda: calls.append("barrier"))
    assert found == copy / "checkpoint-3" and calls == ["barrier"] and (copy / "checkpoint-6").is_dir()
    prepare_run_dir(copy, True, settings, train, is_main=True, barrier=lambda: calls.append("barrier"))
    assert calls == ["barrier", "barrier"] and not (copy / "checkpoint-6").exists()


def test_save_then_load_gives_identical_logits_and_answers(tiny_base, tmp_path):
    from mixcritic.critics.llm.inference import load_critic
    from mixcritic.critics.llm import build_critic
    from mixcritic.critics.llm.critic import CriticSettings
    from mixcritic.critics.llm.prompt import build_example, collate_examples
    from mixcritic.critics.llm.tiny import TinySpec

    mert_dir, llm_dir = tiny_base
    settings = CriticSettings(str(mert_dir), str(llm_dir), projector_hidden=32, segment_s=1.0, lora_r=4,
                              gradient_checkpointing=False, tiny_spec=asdict(TinySpec(**TEST_TINY_SPEC_KW)))
    model = build_critic(settings, "cpu", training=True)
    with torch.no_grad():  # move every trained tensor away from its init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    save_trained(model, tmp_path / "model")
    mark_complete(tmp_path / "model")
    critic = load_critic(tmp_path, device="cpu")
    assert critic.settings["segment_s"] == 1.0 and critic.settings["sample_rate_hz"] == 24000
    n = model.frames_per_clip(24_000)
    batch = collate_examples([build_example(model.tokenizer, "Use the bass.", n, "Fine.")], model.tokenizer.pad_token_id)
    audio = torch.randn(1, 24_000, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        before = model(audio, batch["input_ids"], batch["attention_mask"], batch["audio_mask"]).logits
        after = critic.model(audio, batch["input_ids"], batch["attention_mask"], batch["audio_mask"]).logits
    assert torch.equal(before, after)
    from mixcritic.critics.llm.inference import Critic

    clips = torch.cat([audio, audio * 0.5]).numpy()
    answers = critic.generate(clips, ["Use the bass.", "Use the drums as the anchor."], max_new_tokens=8)
    assert answers == Critic(model, tmp_path).generate(clips, ["Use the bass.", "Use the drums as the anchor."], max_new_tokens=8)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert critic.generate(clips, ["Use the bass.", "Use the drums as the anchor."], max_new_tokens=8) == answers


def test_batched_generation_matches_one_by_one(full_run):
    from mixcritic.critics.llm.inference import load_critic

    out, _ = full_run
    critic = load_critic(out, device="cpu")
    source = FakeSource()
    records = source.records("valid")[:3]
    clips = torch.stack([torch.from_numpy(source.render(r)) for r in records]).numpy()
    texts = [r["instruction"] + " Please answer." * i for i, r in enumerate(records)]
    batched = critic.generate(clips, texts, max_new_tokens=12)
    single = [critic.generate(clips[i:i + 1], texts[i:i + 1], max_new_tokens=12)[0] for i in range(3)]
    assert batched == single


def test_generate_rejects_bad_input(full_run):
    import numpy as np

    from mixcritic.critics.llm.inference import load_critic

    critic = load_critic(full_run[0], device="cpu")
    with pytest.raises(ModelError, match="2 clips but 1 instructions"):
        critic.generate(np.zeros((2, 24_000), np.float32), ["x"])
    bad = np.zeros((1, 24_000), np.float32)
    bad[0, 5] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        critic.generate(bad, ["x"])


def test_load_critic_without_a_model_says_how_to_train(tmp_path):
    from mixcritic.critics.llm.inference import load_critic

    with pytest.raises(ModelError, match="mixcritic train"):
        load_critic(tmp_path)
