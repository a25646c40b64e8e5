"""Issue 11, item 1: each defect of the GPU path found in review has a test here (CPU, seconds)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from model_helpers import TEST_TINY_SPEC_KW, FakeSource


torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_settings(tiny_base):
    from mixcritic.critics.llm.critic import CriticSettings
    from mixcritic.critics.llm.tiny import TinySpec

    mert_dir, llm_dir = tiny_base
    return CriticSettings(str(mert_dir), str(llm_dir), quantize_4bit=False, projector_hidden=32, segment_s=1.0, lora_r=4,
                          gradient_checkpointing=False, tiny_spec=asdict(TinySpec(**TEST_TINY_SPEC_KW)))


@pytest.fixture(scope="module")
def tiny_model(tiny_settings):
    from mixcritic.critics.llm import build_critic

    return build_critic(tiny_settings, "cpu", training=False)


# -- dependency floor ------------------------------------------------------------------------

def test_transformers_floor_is_the_tested_major_version():
    """The code needs transformers 5.x (dataclass configs, logits_to_keep, dtype=); the floor says so."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"transformers\b", d))
    floor = re.search(r">=\s*([0-9]+)", spec)
    assert floor is not None and int(floor.group(1)) >= 5, spec


# -- seed reaches the initialisation ---------------------------------------------------------

def test_seed_reaches_the_projector_and_adapter_init(tiny_base, tmp_path, monkeypatch):
    import mixcritic.critics.llm as llm_pkg
    from mixcritic.critics.llm.train import TrainRequest, run_training

    real_build = llm_pkg.build_critic
    seen = {}

    class Built(Exception):
        pass

    def capture(settings, device, *args, **kwargs):
        model = real_build(settings, device, *args, **kwargs)
        seen[len(seen)] = {k: v.clone() for k, v in model.trained_state().items()}
        raise Built

    monkeypatch.setattr(llm_pkg, "build_critic", capture)
    for i, seed in enumerate((1, 2, 1)):
        request = TrainRequest(data_dir=tmp_path, out_dir=tmp_path / f"run{i}", preset="tiny", device="cpu", progress=False,
                               train_overrides=(("seed", seed), ("workers", 0)),
                               model_overrides=(("tiny_spec", TEST_TINY_SPEC_KW),))
        with pytest.raises(Built):
            run_training(request, FakeSource())
    proj = "projector.net.0.weight"
    lora = next(k for k in seen[0] if "lora_A" in k)
    assert not torch.equal(seen[0][proj], seen[1][proj]) and not torch.equal(seen[0][lora], seen[1][lora])
    assert torch.equal(seen[0][proj], seen[2][proj]) and torch.equal(seen[0][lora], seen[2][lora])


# -- generation: last-position logits only, both stop tokens ---------------------------------

def test_generation_computes_logits_for_the_last_position_only(tiny_model):
    from mixcritic.critics.llm.inference import Critic

    head = tiny_model.llm.get_base_model().lm_head
    positions = []
    handle = head.register_forward_hook(lambda module, args, out: positions.append(args[0].shape[1]))
    try:
        Critic(tiny_model, Path(".")).generate(torch.zeros(2, 24_000).numpy() + 0.01, ["Use the bass.", "Use the drums."],
                                               max_new_tokens=3)
    finally:
        handle.remove()
    assert positions and all(p == 1 for p in positions), positions  # the prompt's prefill too


def test_endoftext_stops_generation(tiny_model):
    from mixcritic.critics.llm.inference import stop_token_ids

    tokenizer = tiny_model.tokenizer
    assert stop_token_ids(tokenizer) == {tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                         tokenizer.convert_tokens_to_ids("<|endoftext|>")}


# -- bf16 autocast at inference as in training -----------------------------------------------

def test_inference_runs_under_the_training_autocast(tiny_model, monkeypatch):
    from mixcritic.critics.llm import inference
    from mixcritic.critics.llm.inference import Critic

    monkeypatch.setattr(inference, "bf16_supported", lambda device: True)  # pretend this CPU is a bf16 GPU
    seen = []
    hook = lambda module, args, kwargs: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))  # noqa: E731
    handle = tiny_model.llm.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        bf16_model = Critic(tiny_model, Path("."))
        tiny_model.settings = replace(tiny_model.settings, autocast_bf16=True)
        bf16_model.generate(torch.full((1, 24_000), 0.01).numpy(), ["Use the bass."], max_new_tokens=2)
        assert seen and all(s == (True, torch.bfloat16) for s in seen)
        seen.clear()
        tiny_model.settings = replace(tiny_model.settings, autocast_bf16=False)
        bf16_model.generate(torch.full((1, 24_000), 0.01).numpy(), ["Use the bass."], max_new_tokens=2)
        assert seen and not any(enabled for enabled, _ in seen)
    finally:
        handle.remove()
        tiny_model.settings = replace(tiny_model.settings, autocast_bf16=False)


def test_training_records_whether_it_ran_under_bf16_autocast(tiny_base, tmp_path):
    from mixcritic.critics.llm.train import TrainRequest, resolve_settings

    request = TrainRequest(data_dir=tmp_path, out_dir=tmp_path / "run", preset="tiny", device="cpu",
                           model_overrides=(("tiny_spec", TEST_TINY_SPEC_KW),))
    _, settings = resolve_settings(request, FakeSource())
    assert settings.autocast_bf16 is False  # CPU: no autocast in training, so none at inference


# -- MERT: do_normalize, front end, warnings -------------------------------------------------

def test_mert_do_normalize_is_taken_from_the_snapshot_and_applied(tiny_base, tmp_path):
    """Before: the flag was read into EncoderInfo and then dropped; every run normalised regardless."""
    from mixcritic.critics.llm.encoder import hidden_states, load_encoder, normalize_clips
    from mixcritic.critics.llm.train import TrainRequest, resolve_settings

    mert_dir, llm_dir = tiny_base
    plain = tmp_path / "mert"
    shutil.copytree(mert_dir, plain)
    pre = json.loads((plain / "preprocessor_config.json").read_text())
    (plain / "preprocessor_config.json").write_text(json.dumps(pre | {"do_normalize": False}))
    for encoder, expected in ((mert_dir, True), (plain, False)):
        request = TrainRequest(data_dir=tmp_path, out_dir=tmp_path / "run", preset="tiny", device="cpu",
                               model_overrides=(("encoder_source", str(encoder)), ("llm_source", str(llm_dir)),
                                                ("tiny_spec", TEST_TINY_SPEC_KW)))
        assert resolve_settings(request, FakeSource())[1].normalize_input is expected
    encoder, _ = load_encoder(mert_dir)
    audio = 0.3 + 0.01 * torch.randn(1, 24_000, generator=torch.Generator().manual_seed(1))
    applied = hidden_states(encoder, audio, normalize_input=True)
    assert torch.equal(applied, hidden_states(encoder, normalize_clips(audio), normalize_input=False))
    assert not torch.allclose(applied, hidden_states(encoder, audio, normalize_input=False))


def test_tiny_mert_has_mert_v1_330m_front_end(tiny_base):
    """MERT-v1-330M: feat_extract_norm "group" (group norm in the first conv layer only), conv_bias false."""
    from torch import nn

    from mixcritic.critics.llm.encoder import load_encoder

    config = json.loads((tiny_base[0] / "config.json").read_text())
    assert config["feat_extract_norm"] == "group" and config["conv_bias"] is False
    encoder, _ = load_encoder(tiny_base[0])
    convs = encoder.feature_extractor.conv_layers
    assert isinstance(convs[0].layer_norm, nn.GroupNorm)
    assert not any(isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for layer in convs[1:] for m in layer.modules())
    assert all(layer.conv.bias is None for layer in convs)


def test_mert_pretraining_only_fields_load_silently(tiny_base, tmp_path, capsys):
    from mixcritic.critics.llm.encoder import hubert_config_from_mert

    config = json.loads((tiny_base[0] / "config.json").read_text())
    assert "feat_extract_dropout" in config  # MERT-v1-330M's config.json has it; HubertConfig does not
    hubert_config_from_mert(config)
    hubert_config_from_mert(config | {"made_up_field": 1})
    err = capsys.readouterr().err
    assert "feat_extract_dropout" not in err and "made_up_field" in err  # unknown fields still warn


def test_llm_missing_weight_warning_is_shown(tiny_base, tmp_path):
    from safetensors.torch import load_file, save_file

    from mixcritic.critics.llm.language_model import load_llm

    broken = tmp_path / "qwen2"
    shutil.copytree(tiny_base[1], broken)
    state = load_file(str(broken / "model.safetensors"))
    state.pop("model.norm.weight")
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        load_llm(broken, "cpu", quantize_4bit=False)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert any("model.norm.weight" in record.getMessage() for record in records)


# -- system message ---------------------------------------------------------------------------

def test_system_message_setting_reaches_the_prompt(tiny_model):
    from mixcritic.critics.llm.prompt import build_example

    tokenizer = tiny_model.tokenizer
    default = build_example(tokenizer, "Use the bass.", 3, "Fine.")
    custom = build_example(tokenizer, "Use the bass.", 3, "Fine.", system_message="You are a mixing engineer.")
    decoded = tokenizer.decode(custom.input_ids)
    assert "You are a mixing engineer." in decoded and "helpful assistant" not in decoded
    assert "helpful assistant" in tokenizer.decode(default.input_ids)
    assert sum(custom.audio_mask) == 3 and custom.labels[-len(tokenizer("Fine.")["input_ids"]) - 1:] == \
        default.labels[-len(tokenizer("Fine.")["input_ids"]) - 1:]


def test_generation_uses_the_runs_system_message(tiny_model, monkeypatch):
    from mixcritic.critics.llm import prompt
    from mixcritic.critics.llm.inference import Critic

    seen = []
    real = prompt.build_example
    monkeypatch.setattr(prompt, "build_example", lambda *a, **k: seen.append(k.get("system_message")) or real(*a, **k))
    tiny_model.settings = replace(tiny_model.settings, system_message="Be brief.")
    try:
        Critic(tiny_model, Path(".")).generate(torch.full((1, 24_000), 0.01).numpy(), ["Use the bass."], max_new_tokens=1)
    finally:
        tiny_model.settings = replace(tiny_model.settings, system_message=None)
    assert seen == ["Be brief."]


# -- one device without a launcher ------------------------------------------------------------

@pytest.fixture
def four_gpus(monkeypatch):
    """Pretend this machine has 4 CUDA GPUs and no launcher set up the process."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_several_gpus_without_a_launcher_train_on_one_and_say_how_to_use_all(four_gpus):
    from mixcritic.critics.llm.train import single_process_device

    device, note = single_process_device("cuda:2")
    assert device == "cuda:2"
    assert "4 GPUs" in note and "cuda:2" in note and "torchrun --nproc_per_node 4" in note
    assert single_process_device("cuda")[0] == "cuda:0"
    four_gpus.setattr(torch.cuda, "device_count", lambda: 1)
    assert single_process_device("cuda") == ("cuda:0", None)
    assert single_process_device("cpu") == ("cpu", None)


def test_under_a_launcher_each_process_keeps_its_own_gpu_silently(four_gpus):
    from mixcritic.critics.llm.train import single_process_device

    four_gpus.setenv("LOCAL_RANK", "3")
    four_gpus.setenv("WORLD_SIZE", "4")
    assert single_process_device("cuda:3") == ("cuda:3", None)


def test_trainer_arguments_are_pinned_to_one_gpu(four_gpus, tmp_path):
    """Without this the Trainer sees n_gpu == 4 and wraps the 4-bit model in DataParallel (a crash)."""
    from mixcritic.critics.llm.train import TrainSettings, pin_single_device, training_arguments

    four_gpus.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    args = training_arguments(TrainSettings(batch_size=3, workers=0), tmp_path / "run", "cpu", False)
    args._n_gpu = 4  # what TrainingArguments computes on a 4-GPU machine without a launcher
    chosen = []
    four_gpus.setattr(torch.cuda, "set_device", chosen.append)
    pin_single_device(args, "cuda:2")
    assert args.n_gpu == 1 and args.device == torch.device("cuda:2") and chosen == [torch.device("cuda:2")]
    assert args.train_batch_size == 3  # no DataParallel scaling
