"""Training throughput of the tiny preset on CPU for several --audio-pool values, as ratios.

    PYTHONPATH=src python bench/train_throughput.py --data toy-data --steps 10 --repeats 3

For each pooling the tiny-preset model (4-bit tiny Qwen2 + LoRA, tiny MERT) is built once and
trained for ``--steps`` optimizer steps on one fixed batch of 4 rendered 10 s clips (no
DataLoader, so rendering is excluded), after 2 warm-up steps. Wall time and process CPU time per
step are recorded (CPU time is less disturbed by other jobs on a shared machine), as is the
frozen encoder's share. Rounds alternate the pooling order; the best round counts. JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path


def time_steps(critic, batch: dict, audio, steps: int) -> tuple[float, float]:
    """(wall s, CPU s) per optimizer step on a fixed batch."""
    import torch

    params = [p for p in critic.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        out = critic(audio, **batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(2):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def time_encoder(critic, audio, steps: int) -> float:
    """Wall s per batch of the frozen encoder alone (hidden states, no grad)."""
    from mixcritic.critics.llm.encoder import hidden_states

    hidden_states(critic.encoder, audio, True)
    start = time.perf_counter()
    for _ in range(steps):
        hidden_states(critic.encoder, audio, True)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tiny-preset training step time per --audio-pool.")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (mixcritic synth)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pools", default="1,2,4")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from mixcritic.dataset import open_dataset
    from mixcritic.critics.llm import build_critic
    from mixcritic.critics.llm.prompt import build_example, collate_examples
    from mixcritic.critics.llm.train import TrainRequest, resolve_settings

    torch.set_num_threads(args.threads)
    source = open_dataset(args.data)
    _, base_settings = resolve_settings(TrainRequest(args.data, args.data, "tiny"), source)
    records = source.records("train")[:4]
    audio = torch.from_numpy(np.stack([source.render(r) for r in records]))
    pools = [int(p) for p in args.pools.split(",")]
    rounds: dict[int, list[dict]] = {p: [] for p in pools}
    for repeat in range(args.repeats):
        for pool in pools if repeat % 2 == 0 else list(reversed(pools)):
            torch.manual_seed(0)
            critic = build_critic(replace(base_settings, audio_pool=pool), "cpu", training=True)
            n = critic.frames_per_clip(audio.shape[1])
            batch = collate_examples([build_example(critic.tokenizer, r["instruction"], n, r["response"]) for r in records],
                                     critic.tokenizer.pad_token_id)
            wall, cpu = time_steps(critic, batch, audio, args.steps)
            rounds[pool].append({"wall_s_per_step": round(wall, 3), "cpu_s_per_step": round(cpu, 3),
                                 "encoder_wall_s": round(time_encoder(critic, audio, 3), 3),
                                 "sequence_tokens": int(batch["input_ids"].shape[1])})
    best = {p: min(r["wall_s_per_step"] for r in rounds[p]) for p in pools}
    best_cpu = {p: min(r["cpu_s_per_step"] for r in rounds[p]) for p in pools}
    report = {
        "threads": args.threads,
        "batch": 4,
        "clip_s": round(audio.shape[1] / 24_000, 2),
        "rounds": rounds,
        "best_wall_s_per_step": best,
        "samples_per_s_best": {p: round(4 / best[p], 2) for p in pools},
        "throughput_ratio_vs_pool1_wall": {p: round(best[pools[0]] / best[p], 2) for p in pools},
        "throughput_ratio_vs_pool1_cpu": {p: round(best_cpu[pools[0]] / best_cpu[p], 2) for p in pools},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
