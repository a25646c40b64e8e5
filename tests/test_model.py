"""Model pieces: MERT loading, layer weights, projector, aux loss, prompt splicing, 4-bit LoRA."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from mixcritic.errors import ModelError
from mixcritic.critics.llm.encoder import frames_for_samples, hidden_states, hubert_config_from_mert, load_encoder
from mixcritic.critics.llm.projector import LayerWeights, Projector, mean_rms_norm, norm_matching_loss, pool_frames
from model_helpers import TEST_TINY_SPEC_KW

from mixcritic.critics.llm.tiny import (
    MERT_CONV_KERNELS,
    MERT_CONV_STRIDES,
    TinySpec,
    mert_style_config,
    to_legacy_keys,
    write_mert_snapshot,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mock_mert(tmp_path_factory):
    """An in-memory tiny MERT-shaped HubertModel and its snapshot saved like the real one (.bin, legacy keys)."""
    from transformers import HubertModel

    spec = TinySpec()
    config = mert_style_config(spec)
    torch.manual_seed(3)
    model = HubertModel(hubert_config_from_mert(config)).eval()
    folder = write_mert_snapshot(tmp_path_factory.mktemp("mert"), config, to_legacy_keys(model.state_dict()), "bin")
    return model, folder, config


def test_mert_frame_rate_is_75_hz():
    assert frames_for_samples(list(MERT_CONV_KERNELS), list(MERT_CONV_STRIDES), 240_000) == 749
    assert frames_for_samples(list(MERT_CONV_KERNELS), list(MERT_CONV_STRIDES), 24_000) == 74


def test_mock_snapshot_is_mert_shaped(mock_mert):
    _, folder, _ = mock_mert
    written = json.loads((folder / "config.json").read_text())
    assert written["model_type"] == "mert_model" and written["attention_relax"] == 32.0
    assert not written["deepnorm"] and not written["feature_extractor_cqt"]
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert "encoder.pos_conv_embed.conv.weight_g" in state and "encoder.pos_conv_embed.conv.weight_v" in state
    assert not any("parametrizations" in k for k in state)


def test_mock_snapshot_loads_exactly(mock_mert):
    reference, folder, config = mock_mert
    loaded, info = load_encoder(folder)
    assert info.num_hidden_states == config["num_hidden_layers"] + 1
    assert info.hidden_size == config["hidden_size"] and info.normalize_input
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    audio = torch.randn(2, 240_000, generator=torch.Generator().manual_seed(0))
    states = hidden_states(loaded, audio, normalize_input=True)
    assert states.shape == (config["num_hidden_layers"] + 1, 2, 749, config["hidden_size"])
    with torch.no_grad():
        ref = reference(
            (audio - audio.mean(-1, keepdim=True)) / (audio.var(-1, keepdim=True, unbiased=False) + 1e-7).sqrt(),
            output_hidden_states=True,
        )
    assert torch.equal(states[-1], ref.last_hidden_state)
    for i in range(config["num_hidden_layers"]):
        assert torch.equal(states[i], ref.hidden_states[i])


@pytest.mark.parametrize("flag", ["deepnorm", "feature_extractor_cqt"])
def test_unsupported_mert_flags_are_refused(flag):
    config = mert_style_config(TinySpec()) | {flag: True}
    with pytest.raises(ModelError, match=flag):
        hubert_config_from_mert(config)


def test_wrong_sample_rate_is_refused():
    with pytest.raises(ModelError, match="24000"):
        hubert_config_from_mert(mert_style_config(TinySpec()) | {"sample_rate": 16000})


def test_missing_or_extra_weights_are_refused(mock_mert, tmp_path):
    reference, _, config = mock_mert
    state = to_legacy_keys(reference.state_dict())
    del state["encoder.layers.0.attention.k_proj.weight"]
    state["encoder.extra.weight"] = torch.zeros(1)
    write_mert_snapshot(tmp_path, config, state, "safetensors")
    with pytest.raises(ModelError, match=r"missing \['encoder.layers.0.attention.k_proj.weight'\].*unexpected \['encoder.extra.weight'\]"):
        load_encoder(tmp_path)


def test_layer_weights_start_uniform_and_sum_states():
    states = torch.stack([torch.full((1, 2, 3), float(v)) for v in (1.0, 2.0, 6.0)])
    assert torch.allclose(LayerWeights(3)(states), torch.full((1, 2, 3), 3.0))
    weights = LayerWeights(3)
    with torch.no_grad():
        weights.logits.copy_(torch.tensor([0.0, 0.0, 100.0]))
    assert torch.allclose(weights(states), torch.full((1, 2, 3), 6.0))


def test_pool_frames_averages_and_drops_remainder():
    frames = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1)
    pooled = pool_frames(frames, 4)
    assert pooled.flatten().tolist() == [1.5, 5.5]
    assert pool_frames(torch.zeros(2, 749, 8), 4).shape == (2, 187, 8)
    assert pool_frames(frames, 1) is frames


def test_projector_layout_and_shapes():
    projector = Projector(1024, 3584)
    linear = [m for m in projector.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(1024, 2048)] + [(2048, 2048)] * 3 + [(2048, 3584)]
    kinds = [type(m).__name__ for m in projector.net]
    assert kinds == ["Linear", "ReLU", "LayerNorm", "Dropout"] * 4 + ["Linear"]
    assert all(m.p == 0.1 for m in projector.net if isinstance(m, torch.nn.Dropout))
    assert Projector(32, 64, hidden_dim=16)(torch.zeros(2, 5, 32)).shape == (2, 5, 64)


def test_aux_loss_on_known_inputs():
    audio = torch.ones(2, 3, 4, requires_grad=True)  # per-dimension norm 1
    text = torch.full((5, 4), 2.0, requires_grad=True)  # per-dimension norm 2
    assert mean_rms_norm(text).item() == pytest.approx(2.0)
    loss = norm_matching_loss(audio, text)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert text.grad is None  # text side detached
    # d/da_ij of (mean_i ||a_i|| / 2 - 2)^2 at a = 1: 2 * (1 - 2) * (1 / 6 vectors) * (1 / 2) * (a_ij / ||a_i|| = 1 / 2)
    assert torch.allclose(audio.grad, torch.full_like(audio, -1 / 12))
    assert norm_matching_loss(torch.full((1, 2, 4), 3.0), torch.full((3, 4), -3.0)).item() == 0.0


# -- prompt and splicing on the tiny models ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_critic(tiny_base):
    from mixcritic.critics.llm import build_critic
    from mixcritic.critics.llm.critic import CriticSettings

    mert_dir, llm_dir = tiny_base
    settings = CriticSettings(str(mert_dir), str(llm_dir), projector_hidden=32, segment_s=1.0,
                              gradient_checkpointing=False, tiny_spec=asdict(TinySpec(**TEST_TINY_SPEC_KW)))
    return build_critic(settings, "cpu", training=True)


def test_tiny_llm_is_4bit_with_lora_on_all_linear_layers(tiny_critic):
    import bitsandbytes as bnb

    llm = tiny_critic.llm
    base_linears = [n for n, m in llm.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(base_linears) == 2 * 7  # q, k, v, o, gate, up, down per layer
    lora_layers = {n.rsplit(".lora_A", 1)[0] for n, _ in llm.named_parameters() if ".lora_A" in n}
    assert len(lora_layers) == 14 and not any("lm_head" in n for n in lora_layers)
    module = llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert module.weight.quant_type == "nf4" and module.weight.quant_state.nested  # double quantisation
    trained = {n.split(".")[0] for n, p in tiny_critic.named_parameters() if p.requires_grad}
    assert trained == {"layer_weights", "projector", "llm"}
    assert all("lora_" in n for n, p in llm.named_parameters() if p.requires_grad)


def test_labels_cover_only_the_answer_and_end_of_turn(tiny_critic):
    from mixcritic.critics.llm.prompt import IGNORE_INDEX, build_example

    tok = tiny_critic.tokenizer
    example = build_example(tok, "Use the bass as the anchor.", 7, "The drums are too loud.")
    labelled = [t for t, lab in zip(example.input_ids, example.labels) if lab != IGNORE_INDEX]
    assert tok.decode(labelled) == "The drums are too loud.<|im_end|>"
    assert [lab for lab in example.labels if lab != IGNORE_INDEX] == labelled
    text = tok.decode(example.input_ids[: example.audio_mask.index(True)])
    assert text.endswith("<|im_start|>user\n") and "system" in text
    after = tok.decode(example.input_ids[example.audio_mask.index(True) + 7:])
    assert after.startswith("\nUse the bass as the anchor.<|im_end|>\n<|im_start|>assistant\n")
    assert sum(example.audio_mask) == 7


def test_audio_embeddings_land_exactly_at_the_placeholder(tiny_critic):
    from mixcritic.critics.llm.prompt import build_example, collate_examples

    tok = tiny_critic.tokenizer
    n = tiny_critic.frames_per_clip(24_000)
    examples = [build_example(tok, "Short.", n, "Fine."), build_example(tok, "A much longer instruction here.", n, "No.")]
    batch = collate_examples(examples, tok.pad_token_id, padding_side="left")
    audio_embeds = torch.randn(2, n, tiny_critic.llm.get_input_embeddings().embedding_dim)
    embeds, text = tiny_critic.splice(batch["input_ids"], batch["audio_mask"], audio_embeds)
    for row in range(2):
        positions = batch["audio_mask"][row].nonzero().flatten()
        assert torch.equal(embeds[row, positions], audio_embeds[row])
        others = ~batch["audio_mask"][row]
        assert torch.equal(embeds[row, others], text[row, others])
    with pytest.raises(ModelError, match="audio positions"):
        tiny_critic.splice(batch["input_ids"], batch["audio_mask"], audio_embeds[:, :-1])


def test_tiny_4bit_model_overfits_one_batch(tiny_critic):
    from mixcritic.critics.llm.prompt import build_example, collate_examples

    tok = tiny_critic.tokenizer
    n = tiny_critic.frames_per_clip(24_000)
    examples = [build_example(tok, "Use the drums as the anchor.", n, "The bass is too loud. Reduce it by 3 to 6 dB."),
                build_example(tok, "Use the bass as the anchor.", n, "The mix is balanced. No changes needed.")]
    batch = collate_examples(examples, tok.pad_token_id)
    audio = torch.randn(2, 24_000, generator=torch.Generator().manual_seed(1)) * 0.1
    params = [p for p in tiny_critic.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    tiny_critic.train()
    losses = []
    for _ in range(40):
        out = tiny_critic(audio, **batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.lm_loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def test_feature_standardizer_fits_mean_and_std_per_state_and_dimension():
    from mixcritic.critics.llm.projector import FeatureStandardizer

    torch.manual_seed(0)
    states = torch.randn(3, 4, 50, 2) * torch.tensor([1.0, 10.0]) + torch.tensor([5.0, -2.0])
    norm = FeatureStandardizer(3, 2)
    assert norm.fit([states[:, :2], states[:, 2:]]) == 200
    out = norm(states)
    flat = out.flatten(1, 2)
    assert torch.allclose(flat.mean(1), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(3, 2), atol=1e-5)
