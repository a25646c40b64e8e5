"""Tiny random-init stand-ins for MERT and Qwen2, saved in the real on-disk layouts.

They let the whole pipeline run offline on a CPU in seconds, through the very same loading code
as the real models: a MERT-style snapshot (MERT's config.json fields, MERT's conv strides so the
frame rate is 75 Hz, legacy ``weight_g``/``weight_v`` keys) and a Qwen2-shaped causal LM with a
byte-level BPE tokenizer trained on the project's template texts and a Qwen-style chat template.
Everything is seeded, so rebuilding gives bit-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

MERT_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
MERT_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
"""MERT-v1's feature-encoder convolutions: 320x downsampling, 75 Hz at 24 kHz."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen2's special tokens, in Qwen2's order."""

CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A Qwen-style chat template (ChatML with a default system turn), written for the tiny tokenizer."""


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny models. Defaults keep ``train --preset tiny`` near a minute on 2 CPU cores."""

    encoder_hidden: int = 32
    """Hidden width of the tiny MERT (1024 in MERT-v1-330M)."""
    encoder_layers: int = 2
    """Transformer layers of the tiny MERT (24 in MERT-v1-330M)."""
    encoder_heads: int = 2
    """Attention heads of the tiny MERT."""
    encoder_conv_channels: int = 32
    """Channels of each conv layer of the feature encoder (512 in MERT)."""
    llm_hidden: int = 64
    """Hidden width of the tiny Qwen2 (3584 in Qwen2-7B)."""
    llm_layers: int = 2
    """Decoder layers of the tiny Qwen2 (28 in Qwen2-7B)."""
    llm_heads: int = 4
    """Attention heads (2 key/value heads, grouped-query attention as in Qwen2)."""
    vocab_size: int = 512
    """Target size of the BPE vocabulary trained on the template texts."""
    lm_head_std: float = 0.4
    """Init std of the output head. With Qwen2's default 0.02 a random head caps every logit near
    +-1.3 after the final RMSNorm, so the frozen tiny LLM could never become confident (loss stuck
    near ln(vocab)); a trained LLM's head has no such limit. 0.4 gives logits of std ~3."""
    pretrain_steps: int = 300
    """Text-only training steps on chat-formatted template texts after the random init, so the
    tiny LLM "speaks" the answer format as a real instruct model speaks English (0 = pure
    random init). The audio-to-answer mapping is never seen here: responses are drawn at random."""
    seed: int = 0
    """Seed of the random initialisation and of the text-only pre-training."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name not in ("seed", "lm_head_std", "pretrain_steps") and value < 1:
                raise ValueError(f"TinySpec.{name} must be >= 1, got {value}")
        if self.pretrain_steps < 0:
            raise ValueError("TinySpec.pretrain_steps must be >= 0")
        if self.llm_hidden % self.llm_heads or self.encoder_hidden % self.encoder_heads:
            raise ValueError("hidden sizes must be divisible by the number of heads")


def mert_style_config(spec: TinySpec) -> dict:
    """A config.json dict shaped like MERT-v1-330M's (same fields, same front end), with tiny sizes.

    Mirrors MERT-v1-330M where it matters for loading: ``feat_extract_norm`` "group" (group norm
    in the first conv layer only), ``conv_bias`` false, pre-norm ("stable layer norm") layers,
    and the fields its config.json carries that HubertConfig does not (``attention_relax``,
    ``feature_extractor_cqt*``, ``deepnorm``, the pre-training-only ``feat_extract_dropout``).
    """
    return {
        "architectures": ["MERTModel"],
        "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
        "model_type": "mert_model",
        "attention_relax": 32.0,
        "deepnorm": False,
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336,
        "conv_pos_batch_norm": False,
        "sample_rate": 24000,
        "hidden_size": spec.encoder_hidden,
        "num_hidden_layers": spec.encoder_layers,
        "num_attention_heads": spec.encoder_heads,
        "intermediate_size": 2 * spec.encoder_hidden,
        "hidden_act": "gelu",
        "conv_dim": [spec.encoder_conv_channels] * 7,
        "conv_kernel": list(MERT_CONV_KERNELS),
        "conv_stride": list(MERT_CONV_STRIDES),
        "conv_bias": False,
        "feat_extract_norm": "group",
        "feat_extract_activation": "gelu",
        "feat_extract_dropout": 0.0,
        "do_stable_layer_norm": True,
        "feat_proj_layer_norm": True,
        "feat_proj_dropout": 0.0,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "num_feat_extract_layers": 7,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "final_dropout": 0.1,
        "layerdrop": 0.1,
        "apply_spec_augment": True,
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
        "mask_time_min_masks": 2,
        "mask_feature_prob": 0.0,
        "mask_feature_length": 10,
        "mask_feature_min_masks": 0,
        "ctc_loss_reduction": "sum",
        "ctc_zero_infinity": False,
        "use_weighted_layer_sum": False,
        "classifier_proj_size": 256,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "vocab_size": 32,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "gradient_checkpointing": False,
        "transformers_version": "4.25.1",
        "torch_dtype": "float32",
    }


def to_legacy_keys(state: dict) -> dict:
    """Rename weight-norm parametrisation keys back to the legacy ``weight_g``/``weight_v`` names."""
    out = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value
    return out


def write_mert_snapshot(out_dir: Path, config: dict, state: dict, weights_format: str = "bin") -> Path:
    """Write a MERT-style snapshot: config.json, preprocessor_config.json and weights.

    ``weights_format``: "bin" (a ``pytorch_model.bin`` like the published MERT) or "safetensors".
    """
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": 24000,
    }, indent=2))
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if weights_format == "bin":
        torch.save(tensors, out_dir / "pytorch_model.bin")
    elif weights_format == "safetensors":
        save_file(tensors, str(out_dir / "model.safetensors"))
    else:
        raise ValueError(f"weights_format must be 'bin' or 'safetensors', got {weights_format!r}")
    return out_dir


def build_tiny_mert(out_dir: Path, spec: TinySpec, weights_format: str = "safetensors") -> Path:
    """Random-init tiny MERT saved as a MERT-style snapshot with legacy weight-norm keys."""
    import torch
    from transformers import HubertModel

    from mixcritic.critics.llm.encoder import hubert_config_from_mert

    config = mert_style_config(spec)
    torch.manual_seed(spec.seed)
    model = HubertModel(hubert_config_from_mert(config))
    return write_mert_snapshot(out_dir, config, to_legacy_keys(model.state_dict()), weights_format)


def tokenizer_corpus() -> list[str]:
    """Texts the tiny tokenizer is trained on: every instruction and response template, rendered."""
    from mixcritic import templates
    from mixcritic.labels import CATEGORIES, STEMS, TARGET_STEMS, Label

    texts: list[str] = []
    for template_id in range(len(templates.INSTRUCTION_TEMPLATES)):
        for anchor in TARGET_STEMS:
            texts.append(templates.render_instruction(template_id, 10.0, STEMS, anchor))
            texts.append(templates.render_instruction(template_id, 7.5, (anchor, "other"), anchor))
    for category in CATEGORIES:
        for template_id in range(len(templates.RESPONSE_TEMPLATES[category])):
            for stem in TARGET_STEMS:
                texts.append(templates.render_response(Label.for_flaw(category, stem), template_id))
    texts += ["You are a helpful assistant.", "system user assistant", " ".join(str(n) for n in range(-20, 21))]
    return texts


def build_tiny_tokenizer(out_dir: Path, spec: TinySpec, corpus: list[str] | None = None):
    """Train a byte-level BPE on the template texts; save it as a PreTrainedTokenizerFast with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_qwen2(out_dir: Path, spec: TinySpec, vocab_size: int, eos_id: int, pad_id: int, tokenizer=None) -> Path:
    """Random-init Qwen2-shaped causal LM saved with ``save_pretrained`` (safetensors)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=spec.llm_hidden,
        intermediate_size=2 * spec.llm_hidden,
        num_hidden_layers=spec.llm_layers,
        num_attention_heads=spec.llm_heads,
        num_key_value_heads=max(1, spec.llm_heads // 2),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    torch.manual_seed(spec.seed + 1)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, spec.lm_head_std)
    if tokenizer is not None and spec.pretrain_steps:
        pretrain_on_templates(model, tokenizer, spec)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False)
    model.save_pretrained(str(out_dir))
    return out_dir


def template_conversations(count: int, seed: int) -> list[tuple[str, str]]:
    """(user text, answer) pairs like the training prompts, with random labels and no audio."""
    import random

    from mixcritic import templates
    from mixcritic.labels import CATEGORIES, STEMS, TARGET_STEMS, Label
    from mixcritic.critics.llm.prompt import user_message

    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        anchor = rng.choice(TARGET_STEMS)
        target = rng.choice([s for s in TARGET_STEMS if s != anchor])
        category = rng.choice(CATEGORIES)
        instruction = templates.render_instruction(rng.randrange(len(templates.INSTRUCTION_TEMPLATES)), 10.0, STEMS, anchor)
        label = Label.for_flaw(category, target)
        answer = templates.render_response(label, rng.randrange(len(templates.RESPONSE_TEMPLATES[category])))
        pairs.append((user_message(instruction).replace("<|audio|>", ""), answer))
    return pairs


def pretrain_on_templates(model, tokenizer, spec: TinySpec, batch_size: int = 16, lr: float = 3e-3) -> list[float]:
    """Full-parameter text-only training of the tiny LLM on chat-formatted template answers.

    Single-threaded and seeded, so the result is reproducible on a given platform. Returns the
    loss per step.
    """
    import torch

    from mixcritic.critics.llm.critic import causal_lm_loss
    from mixcritic.critics.llm.prompt import build_example, collate_examples

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(spec.seed + 2)
    pairs = template_conversations(spec.pretrain_steps * batch_size, spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / spec.pretrain_steps)
    model.train()
    losses = []
    try:
        for step in range(spec.pretrain_steps):
            chunk = pairs[step * batch_size:(step + 1) * batch_size]
            batch = collate_examples([build_example(tokenizer, u, 0, a) for u, a in chunk], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = causal_lm_loss(logits, batch["labels"])
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses


def spec_key(spec: TinySpec) -> str:
    """Cache key of a tiny base: spec + tokenizer corpus (so a template change rebuilds it)."""
    payload = json.dumps({"spec": asdict(spec), "corpus": tokenizer_corpus(), "layout": 2}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_root() -> Path:
    """``$MIXCRITIC_CACHE_DIR`` if set, else the platform's user cache dir for mixcritic."""
    env = os.environ.get("MIXCRITIC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mixcritic"))


def ensure_tiny_base(spec: TinySpec | None = None, root: Path | None = None) -> tuple[Path, Path]:
    """Build (once) and return ``(mert_dir, llm_dir)`` of the tiny base models in the cache.

    Built in a temporary folder and moved into place, so an interrupted build is never used.
    """
    spec = spec or TinySpec()
    base = (root or cache_root()) / "tiny-base" / spec_key(spec)
    mert_dir, llm_dir = base / "mert", base / "qwen2"
    if (base / "COMPLETE").is_file():
        return mert_dir, llm_dir
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=base.parent))
    try:
        build_tiny_mert(tmp / "mert", spec)
        tokenizer = build_tiny_tokenizer(tmp / "qwen2", spec)
        build_tiny_qwen2(tmp / "qwen2", spec, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer)
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        (tmp / "COMPLETE").write_text("ok\n")
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return mert_dir, llm_dir
