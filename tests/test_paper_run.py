"""Issue 11, item 2: the `paper-run` preset (the authors' published run) and its new settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_helpers import FakeSource

from mixcritic.critics.llm.augment import apply_augmentation, random_augmentation
from mixcritic.critics.llm.projector import Projector, norm_matching_loss
from mixcritic.errors import ModelError

torch.set_num_threads(1)


def test_gain_augmentation_is_exact_in_db():
    audio = np.full(1000, 0.1, np.float32)
    assert np.allclose(apply_augmentation(audio, gain_db=3.0), audio * 10 ** (3 / 20), rtol=1e-6)
    assert np.allclose(apply_augmentation(audio, gain_db=-6.0), audio * 0.501187, rtol=1e-5)


def test_noise_augmentation_hits_the_snr_and_dc_shifts_the_mean():
    rng = np.random.default_rng(0)
    audio = (0.2 * np.sin(np.arange(24_000) * 0.05)).astype(np.float32)
    noise = rng.standard_normal(audio.shape)
    noisy = apply_augmentation(audio, snr_db=50.0, noise=noise)
    snr_db = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean((noisy - audio).astype(np.float64) ** 2))
    assert snr_db == pytest.approx(50.0, abs=0.01)
    shifted = apply_augmentation(audio, dc_offset=0.005)
    assert np.mean(shifted - audio) == pytest.approx(0.005, abs=1e-7)
    silent = np.zeros(100, np.float32)
    assert np.array_equal(apply_augmentation(silent, snr_db=40.0, noise=np.ones(100)), silent)  # no SNR of silence


def test_random_augmentation_stays_within_the_ranges():
    audio = (0.2 * np.sin(np.arange(24_000) * 0.05)).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(50):
        out = random_augmentation(audio, rng, 3.0, [40.0, 60.0], 0.0)
        gain = float(np.dot(out, audio) / np.dot(audio, audio))
        assert 10 ** (-3.05 / 20) < gain < 10 ** (3.05 / 20)
        residual = out - gain * audio
        snr_db = 10 * np.log10(np.mean((gain * audio) ** 2) / np.mean(residual**2))
        assert 39.5 < snr_db < 60.5
    offsets = [float(np.mean(random_augmentation(audio, rng, 0.0, None, 0.005) - audio)) for _ in range(50)]
    assert max(abs(o) for o in offsets) <= 0.005 + 1e-6 and np.std(offsets) > 0.001
    assert np.array_equal(random_augmentation(audio, rng), audio)  # all off: unchanged


def test_gelu_projector_with_the_authors_widths():
    projector = Projector(1024, 3584, [2048, 4096, 4096, 2048], dropout=0.1, activation="gelu")
    linears = [m for m in projector.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 2048), (2048, 4096), (4096, 4096),
                                                                  (4096, 2048), (2048, 3584)]
    assert sum(isinstance(m, torch.nn.GELU) for m in projector.net) == 4
    assert not any(isinstance(m, torch.nn.ReLU) for m in projector.net)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in projector.net) == 4


def test_aux_loss_norm_d_is_d_times_weaker_than_sqrt_d():
    dim = 3584
    audio, text = torch.ones(2, 5, dim), 2 * torch.ones(7, dim)
    assert float(norm_matching_loss(audio, text)) == pytest.approx(1.0)
    assert float(norm_matching_loss(audio, text, "d")) == pytest.approx(1.0 / dim)


def test_settings_refuse_unknown_activation_and_norm(tiny_base):
    from mixcritic.critics.llm.critic import CriticSettings

    with pytest.raises(ModelError, match="--projector-activation"):
        CriticSettings("m", "l", projector_activation="tanh")
    with pytest.raises(ModelError, match="--aux-loss-norm"):
        CriticSettings("m", "l", aux_loss_norm="d2")
    with pytest.raises(ModelError, match="--projector-hidden"):
        CriticSettings("m", "l", projector_hidden=[2048, 0])
    assert CriticSettings("m", "l", projector_hidden=64, projector_depth=3).projector_hidden == [64, 64, 64]


def test_paper_run_trains_and_records_every_setting(tiny_base, tmp_path):
    """paper-run on the tiny base models (a 4-bit LLM on CPU), one step: the run config holds the recipe."""
    from mixcritic.critics.llm.checkpoint import read_trained
    from mixcritic.critics.llm.inference import load_critic
    from mixcritic.critics.llm.train import AUTHORS_SYSTEM_MESSAGE, TrainRequest, run_training

    mert_dir, llm_dir = tiny_base
    out = tmp_path / "run"
    run_training(TrainRequest(
        data_dir=out, out_dir=out, preset="paper-run", device="cpu", progress=False,
        train_overrides=(("max_steps", 1), ("batch_size", 2), ("grad_accum", 1), ("eval_steps", 0), ("workers", 0)),
        model_overrides=(("encoder_source", str(mert_dir)), ("llm_source", str(llm_dir)), ("gradient_checkpointing", False)),
    ), FakeSource(n_train=4, n_val=0))
    stored = json.loads((out / "model" / "mixcritic.json").read_text())
    assert stored["projector_hidden"] == [2048, 4096, 4096, 2048] and stored["projector_activation"] == "gelu"
    assert stored["aux_loss_weight"] == 0.1 and stored["aux_loss_norm"] == "d"
    assert stored["lora_r"] == 16 and stored["lora_alpha"] == 32 and stored["lora_dropout"] == 0.1
    assert stored["system_message"] == AUTHORS_SYSTEM_MESSAGE
    train = stored["run_train_settings"]
    assert (train["augment_gain_db"], train["augment_noise_snr_db"], train["augment_dc_offset"]) == (3.0, [40.0, 60.0], 0.005)
    assert (train["weight_decay"], train["max_grad_norm"], train["seed"], train["epochs"]) == (0.05, 1.0, 42, 10.0)
    assert read_trained(out / "model")["projector.net.4.weight"].shape == (4096, 2048)
    critic = load_critic(out, device="cpu")
    assert isinstance(critic.model.projector.net[1], torch.nn.GELU)
    assert critic.model.settings.system_message == AUTHORS_SYSTEM_MESSAGE


def test_augmentation_is_for_the_training_split_only(tiny_base):
    from mixcritic.critics.llm.train import TrainSettings, clip_datasets

    train_set, eval_set = clip_datasets(FakeSource(), TrainSettings(augment_gain_db=3.0, max_eval_samples=4), 24_000)
    assert train_set.augment is not None and eval_set.augment is None
    torch.manual_seed(0)
    clean = FakeSource().render(train_set.records[0])
    assert not np.array_equal(train_set[0]["audio"], clean) and np.array_equal(eval_set[0]["audio"],
                                                                               FakeSource().render(eval_set.records[0]))
    plain, _ = clip_datasets(FakeSource(), TrainSettings(), 24_000)
    assert plain.augment is None and np.array_equal(plain[0]["audio"], clean)
