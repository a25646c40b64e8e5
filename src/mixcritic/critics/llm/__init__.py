"""The model: MERT encoder, layer weights, projector, Qwen2 + LoRA, and their assembly.

Heavy imports stay inside the submodules; importing this package imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

# bitsandbytes 0.50 warns on every CPU import with AVX512-BF16 that an optional hub kernel
# ('kernels-community') is missing; it falls back to its own kernel, which mixcritic uses anyway.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

if TYPE_CHECKING:  # pragma: no cover
    from mixcritic.critics.llm.critic import CriticSettings, MixCritic


def resolve_device(device: str = "auto") -> str:
    """'auto' -> cuda, then mps, then cpu; anything else is checked and returned.

    Under torchrun / accelerate launch (``LOCAL_RANK`` set) 'auto' and 'cuda' mean this
    process's own GPU, ``cuda:<LOCAL_RANK>``.
    """
    import torch

    from mixcritic.errors import ModelError

    local_rank = os.environ.get("LOCAL_RANK")  # set by torchrun / accelerate launch
    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank}" if local_rank is not None else "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
    if device == "cuda" and local_rank is not None:
        return f"cuda:{local_rank}"  # one GPU per data-parallel process
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N, mps.")
    return device


def base_sources(settings: "CriticSettings") -> tuple[str, str]:
    """Encoder and LLM locations; for the tiny preset the (deterministic) base is rebuilt if missing."""
    if settings.tiny_spec is not None:
        from mixcritic.critics.llm.tiny import TinySpec, ensure_tiny_base

        if not (Path(settings.encoder_source).is_dir() and Path(settings.llm_source).is_dir()):
            mert_dir, llm_dir = ensure_tiny_base(TinySpec(**settings.tiny_spec))
            return str(mert_dir), str(llm_dir)
    return settings.encoder_source, settings.llm_source


def build_critic(settings: "CriticSettings", device: str = "cpu", encoder=None, llm=None, tokenizer=None,
                 training: bool = False, seed: int = 0) -> "MixCritic":
    """Assemble a :class:`MixCritic` from its settings with a fresh projector and LoRA adapter.

    ``encoder`` / ``llm`` / ``tokenizer`` may be passed already loaded (e.g. shared between runs);
    ``llm`` must then be the bare base model (the adapter is added here). ``seed`` seeds the
    initialisation of the projector and the adapter (``train --seed``).
    """
    import torch

    from mixcritic.critics.llm.critic import MixCritic
    from mixcritic.critics.llm.encoder import load_encoder
    from mixcritic.critics.llm.language_model import LoraSettings, add_lora, load_llm, load_tokenizer

    encoder_source, llm_source = base_sources(settings)
    if encoder is None:
        encoder, _ = load_encoder(encoder_source, device)
    if tokenizer is None:
        tokenizer = load_tokenizer(llm_source)
    if llm is None:
        llm = load_llm(llm_source, device, settings.quantize_4bit)
    lora = LoraSettings(settings.lora_r, settings.lora_alpha, settings.lora_dropout)
    torch.manual_seed(seed)  # the fresh projector / adapter init is reproducible and follows --seed
    peft_llm = add_lora(llm, lora, gradient_checkpointing=training and settings.gradient_checkpointing)
    config = encoder.config
    critic = MixCritic(encoder, peft_llm, tokenizer, settings, config.hidden_size, config.num_hidden_layers + 1)
    critic.layer_weights.to(device)
    critic.projector.to(device)
    if critic.feature_norm is not None:
        critic.feature_norm.to(device)
    return critic.train(training)
