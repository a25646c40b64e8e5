"""Random-init base models in the real on-disk layouts, for bench/gpu_smoke.sh (no weights, no internet).

Writes ``OUT/mert/`` like the published MERT-v1-330M (its config.json fields, a
preprocessor_config.json, one pickle ``pytorch_model.bin`` with legacy weight-norm keys) and
``OUT/qwen2/`` like Qwen2-7B-Instruct (its config, bf16 safetensors shards with an index, a
tokenizer with a chat template whose default system turn is Qwen2's). The tokenizer is the
project's small BPE trained on the templates, since Qwen2's own is not available offline: prompts
are ~155 tokens instead of ~100, so speed and memory come out slightly pessimistic.

    PYTHONPATH=src python bench/gpu_smoke_models.py --out /tmp/smoke/models           # full size, CUDA
    PYTHONPATH=src python bench/gpu_smoke_models.py --out /tmp/smoke/models --tiny    # tiny, CPU

Prints one JSON line: where the models are and how long each took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_dryrun import MERT_330M_SHAPE, MERT_TINY_SHAPE, QWEN2_7B_SHAPE, QWEN2_TINY_SHAPE  # noqa: E402

QWEN2_INSTRUCT_FIELDS = dict(
    hidden_act="silu", initializer_range=0.02, max_window_layers=28, sliding_window=131072, use_sliding_window=False,
    attention_dropout=0.0, use_cache=True,
)
"""Qwen2-7B-Instruct's config fields beside its sizes (QWEN2_7B_SHAPE)."""


def write_mert(out_dir: Path, tiny: bool, device: str) -> Path:
    """A MERT-v1-330M-shaped random HubertModel saved as MERT publishes it (pickle .bin, legacy keys)."""
    import torch
    from transformers import HubertModel

    from mixcritic.critics.llm.encoder import hubert_config_from_mert
    from mixcritic.critics.llm.tiny import TinySpec, mert_style_config, to_legacy_keys, write_mert_snapshot

    config = mert_style_config(TinySpec()) | (MERT_TINY_SHAPE if tiny else MERT_330M_SHAPE)
    torch.manual_seed(0)
    with torch.device(device):
        model = HubertModel(hubert_config_from_mert(config))
    state = {k: v.to("cpu") for k, v in to_legacy_keys(model.state_dict()).items()}
    return write_mert_snapshot(out_dir, config, state, "bin")


def write_qwen2(out_dir: Path, tiny: bool, device: str) -> Path:
    """A Qwen2-7B-Instruct-shaped random causal LM in bf16 safetensors shards, with a chat tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from mixcritic.critics.llm.tiny import TinySpec, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(out_dir, TinySpec())
    shape = QWEN2_TINY_SHAPE if tiny else QWEN2_7B_SHAPE
    config = Qwen2Config(**shape, **QWEN2_INSTRUCT_FIELDS, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(1)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               do_sample=False)
    model.save_pretrained(str(out_dir), max_shard_size="4GB")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for mert/ and qwen2/.")
    parser.add_argument("--tiny", action="store_true", help="Tiny shapes on the CPU (a test of this script).")
    args = parser.parse_args()

    import torch

    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_smoke_models.py: no CUDA device; use --tiny on a CPU")
    timings = {}
    started = time.perf_counter()
    mert = write_mert(args.out / "mert", args.tiny, device)
    timings["mert_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    qwen2 = write_qwen2(args.out / "qwen2", args.tiny, device)
    timings["qwen2_s"] = round(time.perf_counter() - started, 1)
    size_gb = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()) / 1e9
    print(json.dumps({"mert": str(mert), "qwen2": str(qwen2), "size_gb": round(size_gb, 2), **timings}))


if __name__ == "__main__":
    main()
