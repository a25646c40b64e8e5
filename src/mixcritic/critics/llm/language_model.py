"""The language model: Qwen2(-7B-Instruct) in 4-bit NF4 via bitsandbytes, with LoRA via peft.

The model is never forked: audio enters through ``inputs_embeds`` (see ``critic.py``). Loading
goes through ``AutoModelForCausalLM.from_pretrained`` for both the real model and the tiny mock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixcritic.errors import ModelError

QWEN_HUB_ID = "Qwen/Qwen2-7B-Instruct"
"""The paper's language model."""

END_OF_TURN = "<|im_end|>"
"""The chat template's end-of-turn token: trained as the last label, stops generation."""

END_OF_TEXT = "<|endoftext|>"
"""Qwen2's end-of-text token (also its pad token): stops generation too."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter on every linear layer of the LLM (paper: QLoRA r 16, alpha 32)."""

    r: int = 16
    """Rank of the low-rank update."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ModelError(f"--lora-r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ModelError(f"--lora-alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"--lora-dropout must be in [0, 1), got {self.dropout}")


def pick_compute_dtype(device: str, quantize_4bit: bool):
    """bf16 compute for 4-bit layers on CUDA (paper); float32 elsewhere.

    On CPU bitsandbytes' 4-bit matmul is run in float32: bf16 works there too but is several
    times slower on CPUs without AMX/AVX512-BF16, and the tiny CPU preset is about speed.
    """
    import torch

    if quantize_4bit and device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(source: str | Path):
    """The LLM's own tokenizer (with its chat template) from a local dir or the local HF cache."""
    from transformers import AutoTokenizer

    from mixcritic.critics.llm.encoder import resolve_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir(source)))
    if tokenizer.chat_template is None:
        raise ModelError(f"the tokenizer of {source} has no chat template; use an instruct model (e.g. {QWEN_HUB_ID}).")
    if tokenizer.convert_tokens_to_ids(END_OF_TURN) in (None, tokenizer.unk_token_id):
        raise ModelError(f"the tokenizer of {source} has no {END_OF_TURN} token; mixcritic expects a Qwen2-style chat model.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_llm(source: str | Path, device: str, quantize_4bit: bool):
    """Load a causal LM, optionally in 4-bit NF4 with double quantisation (QLoRA's recipe).

    Frozen: every base parameter has ``requires_grad=False``.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from mixcritic.critics.llm.encoder import resolve_model_dir

    quiet_transformers()
    model_dir = resolve_model_dir(source)
    dtype = pick_compute_dtype(device, quantize_4bit)
    kwargs: dict = {"dtype": dtype}
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load the language model from {model_dir}: {exc}") from exc
    if not quantize_4bit:
        model.to(device)
    else:
        keep_one_cpu_4bit_kernel(model)
    model.requires_grad_(False)
    model.eval()
    return model


def keep_one_cpu_4bit_kernel(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 converts a ``Linear4bit`` weight to another
    packed layout on its first no-grad eval forward and keeps it: every later forward, training
    included, then takes a different kernel with slightly different numerics (~1e-3 in the loss),
    so a run with a validation pass would not match its own resumed continuation. One kernel
    for everything keeps CPU results reproducible. No effect on CUDA. Returns the layers changed.
    """
    import bitsandbytes as bnb

    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing, non-reentrant (so frozen inputs need no grad hook).

    transformers 5.x renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``;
    the new name is used where it exists.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


def quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and info logs (mixcritic shows its own progress).

    Warnings stay visible: a checkpoint with missing or unexpected LLM weights must not load silently.
    """
    import warnings

    from transformers.utils import logging

    # transformers 5.x renames gradient_checkpointing -> activation_checkpointing; peft still calls the old names
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*", category=FutureWarning)
    logging.disable_progress_bar()
    logging.set_verbosity_warning()


def add_lora(model, lora: LoraSettings, gradient_checkpointing: bool):
    """Wrap a frozen LLM with a LoRA adapter on all linear layers (lm_head excluded)."""
    from peft import LoraConfig, get_peft_model

    if gradient_checkpointing:
        enable_checkpointing(model)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)
