"""Training throughput of the tiny preset on CPU for several --audio-pool values, as ratios.

    PYTHONPATH=src python bench/train_throughput.py --data toy-data --work /tmp/throughput --steps 20

Each pooling trains the tiny preset for ``--steps`` steps (no validation, one save at the end)
and reports the Trainer's train_samples_per_second (data rendering in a DataLoader worker
included); ratios are relative to --audio-pool 1. Repeats alternate the order to spread the
noise of a shared machine. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tiny-preset training throughput per --audio-pool.")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (mixcritic synth)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the runs")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pools", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from mixcritic.train import TrainRequest, run_training

    pools = [int(p) for p in args.pools.split(",")]
    rates: dict[int, list[float]] = {p: [] for p in pools}
    for repeat in range(args.repeats):
        for pool in pools if repeat % 2 == 0 else list(reversed(pools)):
            out = args.work / f"pool{pool}"
            shutil.rmtree(out, ignore_errors=True)
            overrides = (("max_steps", args.steps), ("eval_steps", 0), ("save_steps", args.steps), ("logging_steps", args.steps))
            summary = run_training(TrainRequest(args.data, out, "tiny", overrides, (("audio_pool", pool),), device="cpu",
                                                progress=False))
            rates[pool].append(summary["samples_per_second"])
    best = {p: max(v) for p, v in rates.items()}
    report = {
        "steps": args.steps,
        "samples_per_s": rates,
        "median_samples_per_s": {p: round(statistics.median(v), 3) for p, v in rates.items()},
        "ratio_vs_pool1_best": {p: round(best[p] / best[pools[0]], 2) for p in pools},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
