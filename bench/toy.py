"""Benchmark the toy generator: synthesis time per song and `write_toy_tree` throughput.

Usage: PYTHONPATH=src python bench/toy.py [--seconds 60] [--songs 5] [--tracks 8] [--tree-seconds 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mixcritic.toy import make_toy_song, write_toy_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each timed song")
    parser.add_argument("--songs", type=int, default=5, help="songs to time (seeds 0..N-1)")
    parser.add_argument("--tracks", type=int, default=8, help="tracks in the written tree")
    parser.add_argument("--tree-seconds", type=float, default=30.0, help="length of each tree track")
    args = parser.parse_args()

    make_toy_song(0, 2.0)  # warm-up: imports, first allocations
    times_s, cpu_s = [], []
    for seed in range(args.songs):
        start, start_cpu = time.perf_counter(), time.process_time()
        make_toy_song(seed, args.seconds)
        times_s.append(time.perf_counter() - start)
        cpu_s.append(time.process_time() - start_cpu)
    print(
        f"make_toy_song, {args.seconds:g} s songs: median {statistics.median(times_s):.2f} s wall "
        f"(min {min(times_s):.2f}, max {max(times_s):.2f}), median {statistics.median(cpu_s):.2f} s CPU -> "
        f"{args.seconds / statistics.median(times_s):.0f}x real time"
    )

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_toy_tree(Path(tmp) / "toy", args.tracks, args.tree_seconds, seed=0)
        elapsed_s = time.perf_counter() - start
    audio_s = args.tracks * args.tree_seconds
    print(
        f"write_toy_tree, {args.tracks} x {args.tree_seconds:g} s: {elapsed_s:.2f} s "
        f"({audio_s / elapsed_s:.0f} audio-seconds per second, WAV writing included)"
    )


if __name__ == "__main__":
    main()
