"""Full-size training dry run on one GPU with random-init models (no weights, no internet).

Builds a MERT-v1-330M-shaped HubertModel (24 layers, 1024 hidden, 16 heads, 4096 FFN, MERT's
conv strides) and a Qwen2-7B-shaped causal LM directly in 4-bit NF4 on the GPU (each layer is
made in bf16 on the GPU and quantised by bitsandbytes straight away; no fp32 copy, nothing on
the CPU), adds LoRA on all linear layers, and runs a few training steps through mixcritic's own
MixCritic module (layer weights, projector, splice, aux loss) at batch 4 with 10 s clips, for
each --audio-pool value. Prints one JSON object: samples/s and peak GPU memory per pooling.

    PYTHONPATH=src python bench/gpu_dryrun.py --out "$OUT/gpu_dryrun.json"
    PYTHONPATH=src python bench/gpu_dryrun.py --tiny          # CPU smoke test of the same code

Needs torch, transformers, peft, bitsandbytes, tokenizers; not soundfile/soxr/pyloudnorm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

QWEN2_7B_SHAPE = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
    num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
"""Qwen2-7B-Instruct's architecture (from its published config)."""

QWEN2_TINY_SHAPE = dict(
    vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
)

MERT_330M_SHAPE = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    conv_dim=[512] * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
)
"""MERT-v1-330M's sizes; the other fields come from the MERT-style config in mixcritic.critics.llm.tiny."""

MERT_TINY_SHAPE = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)


def build_encoder(shape: dict, device: str):
    """Random-init MERT-shaped HubertModel, built on ``device``, frozen (fp32, as in training)."""
    import torch
    from transformers import HubertModel

    from mixcritic.critics.llm.encoder import hubert_config_from_mert
    from mixcritic.critics.llm.tiny import TinySpec, mert_style_config

    config = hubert_config_from_mert(mert_style_config(TinySpec()) | shape)
    with torch.device(device):
        model = HubertModel(config)
    return model.eval().requires_grad_(False)


def quantize_linears(module, compute_dtype, skip: tuple[str, ...] = ("lm_head",), prefix: str = "") -> int:
    """Replace every nn.Linear under ``module`` (except ``skip``) by a bitsandbytes NF4 Linear4bit
    with double quantisation, quantising its current (bf16, on-device) weight; returns the count."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    count = 0
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, nn.Linear) and name not in skip:
            weight = child.weight.data
            layer = bnb.nn.Linear4bit(
                child.in_features, child.out_features, bias=child.bias is not None,
                compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4", device="meta",
            )
            layer.weight = bnb.nn.Params4bit(
                weight.to(compute_dtype), requires_grad=False, compress_statistics=True, quant_type="nf4"
            ).to(weight.device)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.to(compute_dtype), requires_grad=False)
            setattr(module, name, layer)
            del child, weight
            count += 1
        else:
            count += quantize_linears(child, compute_dtype, skip, f"{full}.")
    if prefix == "" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return count


def build_llm_4bit(shape: dict, device: str, compute_dtype):
    """Qwen2-shaped LM made layer by layer in ``compute_dtype`` on ``device`` and quantised to NF4."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(compute_dtype)
    try:
        with torch.device("meta"):
            model = Qwen2ForCausalLM(config)
        # materialise one decoder layer at a time on the device, quantising it before the next
        for index in range(config.num_hidden_layers):
            layer = model.model.layers[index]
            layer.to_empty(device=device)
            init_random_(layer, config.initializer_range)
            quantize_linears(layer, compute_dtype)
        for part in (model.model.embed_tokens, model.model.norm, model.lm_head):
            part.to_empty(device=device)
        init_random_(model.model.embed_tokens, config.initializer_range)
        init_random_(model.lm_head, config.initializer_range)
        model.model.norm.weight.data.fill_(1.0)
    finally:
        torch.set_default_dtype(previous)
    with torch.device(device):  # rotary inverse frequencies are a computed (non-persistent) buffer
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.is_loaded_in_4bit = True  # tells peft to wrap the Linear4bit layers with its 4-bit LoRA
    return model.eval().requires_grad_(False)


def init_random_(module, std: float) -> None:
    """Normal(0, std) weights, zero biases, unit norm weights -- what a real checkpoint's scale looks like."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, std)


def build_tokenizer(out_dir: Path):
    """A small chat tokenizer (ids < 1024) to lay out the prompt; the LLM's embedding table is larger."""
    from mixcritic.critics.llm.tiny import TinySpec, build_tiny_tokenizer, tokenizer_corpus

    corpus = tokenizer_corpus() + [INSTRUCTION, ANSWER]
    return build_tiny_tokenizer(out_dir, TinySpec(vocab_size=400), corpus)


INSTRUCTION = (
    "Listen carefully to this 10.0 s audio clip. The available stems are: bass, drums, other, vocals. "
    "Use the drums as your reference point and analyse the mix balance. Identify which stem needs "
    "adjustment and by how much, or say that the mix is balanced."
)
ANSWER = "The vocals are a little too loud. Reduce the vocals between 3 and 6 dB to balance the mix."


def measure(critic, device: str, batch_size: int, seconds: float, steps: int, autocast_dtype) -> dict:
    """Warm-up step + ``steps`` timed optimizer steps; samples/s and peak memory."""
    import torch

    from mixcritic.critics.llm.prompt import build_example, collate_examples

    samples = int(seconds * 24_000)
    n_audio = critic.frames_per_clip(samples)
    tok = critic.tokenizer
    batch = collate_examples([build_example(tok, INSTRUCTION, n_audio, ANSWER)] * batch_size, tok.pad_token_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    audio = (0.1 * torch.randn(batch_size, samples, generator=torch.Generator().manual_seed(0))).to(device)
    params = [p for p in critic.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    critic.train()
    cuda = device.startswith("cuda")

    def step() -> float:
        # bf16 autocast as the Trainer's --bf16 does; on CPU too, so --tiny exercises the same dtype mix
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=autocast_dtype):
            out = critic(audio, **batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.8)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.item()

    step()  # warm-up: allocator, kernels, optimizer state
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    result = {
        "audio_pool": critic.settings.audio_pool,
        "batch_size": batch_size,
        "clip_s": seconds,
        "audio_positions": n_audio,
        "sequence_tokens": int(batch["input_ids"].shape[1]),
        "timed_steps": steps,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(batch_size * steps / elapsed, 3),
        "losses": [round(x, 4) for x in losses],
    }
    if cuda:
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del optimizer
    return result


def run(tiny: bool, pools: list[int], steps: int, batch_size: int, seconds: float, workdir: Path) -> dict:
    """Build the models once, then measure each pooling with a fresh projector and adapter."""
    import torch

    from mixcritic.critics.llm.critic import CriticSettings, MixCritic
    from mixcritic.critics.llm.language_model import LoraSettings, add_lora

    device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --tiny for the CPU smoke test")
    compute_dtype = torch.bfloat16 if not tiny else torch.float32
    t0 = time.perf_counter()
    encoder = build_encoder(MERT_TINY_SHAPE if tiny else MERT_330M_SHAPE, device)
    t_encoder = time.perf_counter() - t0
    llm = build_llm_4bit(QWEN2_TINY_SHAPE if tiny else QWEN2_7B_SHAPE, device, compute_dtype)
    t_llm = time.perf_counter() - t0 - t_encoder
    tokenizer = build_tokenizer(workdir / "tokenizer")
    report: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "encoder_params_m": round(sum(p.numel() for p in encoder.parameters()) / 1e6, 2),
        "build_encoder_s": round(t_encoder, 1),
        "build_llm_4bit_s": round(t_llm, 1),
        "runs": [],
    }
    if device == "cuda":
        report["weights_gpu_memory_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    import bitsandbytes as bnb

    quantized = [m for m in llm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not quantized or not all(m.weight.bnb_quantized and m.weight.quant_state.nested for m in quantized):
        raise SystemExit("the LLM's linear layers did not all end up NF4 with double quantisation")
    report["nf4_linear_layers"] = len(quantized)
    peft_llm = add_lora(llm, LoraSettings(), gradient_checkpointing=True)
    report["lora_4bit_layers"] = sum(type(m).__name__ == "Linear4bit" and hasattr(m, "lora_A") for m in peft_llm.modules())
    report["trainable_lora_params_m"] = round(sum(p.numel() for p in peft_llm.parameters() if p.requires_grad) / 1e6, 2)
    for pool in pools:
        settings = CriticSettings("random-mert-330m-shape", "random-qwen2-7b-shape", audio_pool=pool,
                                  projector_hidden=64 if tiny else 2048)
        torch.manual_seed(0)
        critic = MixCritic(encoder, peft_llm, tokenizer, settings, encoder.config.hidden_size,
                           encoder.config.num_hidden_layers + 1)
        critic.layer_weights.to(device)
        critic.projector.to(device)
        report["runs"].append(measure(critic, device, batch_size, seconds, steps, torch.bfloat16))
        del critic
        if device == "cuda":
            torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (smoke test of this script)")
    parser.add_argument("--pools", default="1,4", help="comma-separated --audio-pool values")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per pooling")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = run(args.tiny, [int(p) for p in args.pools.split(",")], args.steps, args.batch_size,
                     args.seconds, Path(tmp))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
