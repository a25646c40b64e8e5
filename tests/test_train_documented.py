"""Documented training settings that had no test: the paper preset's values and checkpoint rotation."""

from __future__ import annotations

import pytest
from model_helpers import TEST_TINY_SPEC_KW, FakeSource

from mixcritic.critics.llm.train import TrainRequest, preset_settings, resolve_settings


def test_paper_preset_is_the_papers_recipe(tmp_path):
    # docs/training.md, "Presets and overrides", column `paper` (paper, section III-C)
    train, model = resolve_settings(TrainRequest(data_dir=tmp_path, out_dir=tmp_path / "run", preset="paper"), FakeSource())
    assert (train.epochs, train.max_steps, train.learning_rate, train.lr_scheduler, train.warmup_steps) == (3.0, -1, 1e-5, "cosine", 0)
    assert (train.weight_decay, train.batch_size, train.grad_accum, train.max_grad_norm) == (0.01, 4, 16, 0.8)
    assert (train.logging_steps, train.eval_steps, train.save_steps, train.save_total_limit) == (5, 200, 200, 3)
    assert (train.max_eval_samples, train.workers, train.seed, train.bf16) == (512, 4, 0, True)
    assert (model.encoder_source, model.llm_source) == ("m-a-p/MERT-v1-330M", "Qwen/Qwen2-7B-Instruct")
    assert model.quantize_4bit is True and model.gradient_checkpointing is True
    assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (16, 32, 0.05)
    assert (model.projector_hidden, model.projector_depth, model.projector_dropout) == ([2048] * 4, 4, 0.1)
    assert (model.projector_activation, model.aux_loss_weight, model.aux_loss_norm) == ("relu", 0.05, "sqrt_d")
    assert (model.standardize_clips, model.audio_pool, model.system_message) == (0, 1, None)
    # no training-time augmentation in the paper's text (the authors' run has it: preset paper-run)
    assert (train.augment_gain_db, train.augment_noise_snr_db, train.augment_dc_offset) == (0.0, None, 0.0)
    assert model.tiny_spec is None
    # the dataset decides the audio settings, not the preset
    assert (model.segment_s, model.target_lufs, model.template_version) == (1.0, -23.0, "test-1")


def test_overrides_replace_only_what_they_name(tmp_path):
    request = TrainRequest(data_dir=tmp_path, out_dir=tmp_path / "run", preset="paper",
                           train_overrides=(("learning_rate", 2e-4), ("save_total_limit", 1)), model_overrides=(("lora_r", 8),))
    train, model = resolve_settings(request, FakeSource())
    paper_train, _ = preset_settings("paper")
    assert (train.learning_rate, train.save_total_limit, model.lora_r) == (2e-4, 1, 8)
    assert (train.grad_accum, train.max_grad_norm, model.lora_alpha) == (paper_train.grad_accum, paper_train.max_grad_norm, 32)


def test_save_total_limit_keeps_only_the_newest_checkpoints(tiny_base, tmp_path):
    import torch

    from mixcritic.critics.llm.checkpoint import COMPLETE_MARKER
    from mixcritic.critics.llm.train import run_training

    torch.set_num_threads(1)
    out = tmp_path / "run"
    overrides = (("max_steps", 4), ("save_steps", 1), ("save_total_limit", 2), ("eval_steps", 0), ("workers", 0),
                 ("learning_rate", 1e-3), ("batch_size", 2), ("grad_accum", 1))
    model = (("tiny_spec", TEST_TINY_SPEC_KW), ("audio_pool", 4), ("projector_hidden", 16), ("lora_r", 2), ("lora_alpha", 4),
             ("gradient_checkpointing", False))
    request = TrainRequest(data_dir=out, out_dir=out, preset="tiny", train_overrides=overrides, model_overrides=model,
                           device="cpu", progress=False)
    summary = run_training(request, FakeSource())
    assert summary["global_step"] == 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert all((out / name / COMPLETE_MARKER).is_file() for name in ("checkpoint-3", "checkpoint-4", "model"))
    # rotation continues on resume: 2 more steps keep the two newest
    longer = TrainRequest(data_dir=out, out_dir=out, preset="tiny", train_overrides=overrides[1:] + (("max_steps", 6),),
                          model_overrides=model, device="cpu", progress=False, resume=True)
    resumed = run_training(longer, FakeSource())
    assert resumed["resumed_from"] == str(out / "checkpoint-4") and resumed["global_step"] == 6
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5", "checkpoint-6"]


def test_save_total_limit_option_reaches_the_trainer(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mixcritic.cli import app
    from mixcritic.critics.llm import train as train_module

    seen = []

    def fake_run_training(request, source=None):
        seen.append(request)
        return {"global_step": 0}

    monkeypatch.setattr(train_module, "run_training", fake_run_training)
    monkeypatch.setattr("mixcritic.commands.train.print_summary", lambda summary: None)
    monkeypatch.setattr("mixcritic.dataset.open_dataset", lambda data_dir: FakeSource())  # if the command checks DATA first
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--save-total-limit", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [dict(request.train_overrides).get("save_total_limit") for request in seen] == [2]
    from mixcritic.critics.llm.train import TrainSettings
    from mixcritic.errors import ModelError

    with pytest.raises(ModelError, match="invalid --save-total-limit: 0"):
        TrainSettings(save_total_limit=0)
