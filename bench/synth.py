"""Benchmark `mixcritic synth` and sample rendering on a toy tree.

Measures, in one run and on the same files:

- the I/O floor: only reading every stem WAV (soundfile, float32), as synth does;
- synth throughput (track audio-seconds per wall second) and its ratio to the floor;
- rendering samples from the stem cache vs. a naive per-sample path (read the chunk of the four
  WAVs, downmix, resample to 24 kHz, apply the gain, mix, loudness-normalise with pyloudnorm).

Usage (from the repository root):

    PYTHONPATH=src python bench/synth.py --tracks 20 --seconds 60 --workers 1 2

The toy tree is written once to --tree (default: a temporary folder) and reused when it exists.
Pages are warmed by a first read pass, so every timing sees the same (cached) files. Each timing
is the best of --repeat runs (floor and synth interleaved), which filters out other load on a
shared machine; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path


def read_floor_s(files: list[Path], workers: int) -> float:
    """Seconds to read every file (float32), with ``workers`` processes."""
    import soundfile as sf

    started = time.perf_counter()
    if workers == 1:
        for path in files:
            sf.read(str(path), dtype="float32")
    else:
        import concurrent.futures

        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            list(pool.map(_read_one, files, chunksize=max(1, len(files) // (4 * workers))))
    return time.perf_counter() - started


def _read_one(path: Path) -> int:
    import soundfile as sf

    return sf.read(str(path), dtype="float32")[0].shape[0]


def best_per_item_s(func, items: list, repeat: int) -> float:
    """Best (over ``repeat`` passes) mean seconds per item of ``func``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            func(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best


def naive_render(source: Path, record: dict, target_lufs: float):
    """Render a sample straight from the source WAVs: read, downmix, resample, gain, mix, normalise."""
    import soundfile as sf

    from mixcritic import audio, labels

    track_dir = next((source / split / record["track"]) for split in ("train", "test") if (source / split / record["track"]).is_dir())
    mix = None
    for stem in labels.STEMS:
        path = track_dir / f"{stem}.wav"
        rate_hz = sf.info(str(path)).samplerate
        start = round(record["start_s"] * rate_hz)
        data, _ = sf.read(str(path), start=start, frames=round(record["duration_s"] * rate_hz), dtype="float32", always_2d=True)
        mono = audio.resample(audio.to_mono(data), rate_hz, labels.MODEL_SAMPLE_RATE_HZ)
        if stem == record["target_stem"]:
            mono = audio.apply_gain_db(mono, record["gain_db"])
        mix = mono if mix is None else mix + mono
    return audio.normalize_loudness(mix, labels.MODEL_SAMPLE_RATE_HZ, target_lufs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--renders", type=int, default=200, help="samples rendered by each path")
    parser.add_argument("--tree", type=Path, default=None, help="toy tree folder (written if missing)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per timing")
    parser.add_argument("--json", action="store_true", help="print only JSON")
    args = parser.parse_args()

    from mixcritic.dataset import open_dataset
    from mixcritic.synthesis import SynthConfig, synthesize
    from mixcritic.toy import write_toy_tree

    scratch = Path(tempfile.mkdtemp(prefix="mixcritic-bench-"))
    tree = args.tree or scratch / "toy"
    write_toy_tree(tree, args.tracks, args.seconds, seed=0)
    files = sorted(tree.glob("*/*/*.wav"))
    audio_s = args.tracks * args.seconds
    read_floor_s(files, 1)  # warm the page cache

    results: dict = {"load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(), "tracks": args.tracks, "seconds_per_track": args.seconds, "audio_s": audio_s, "stem_files": len(files), "synth": []}
    data_dir = None
    for workers in args.workers:
        floors, synths, floor_cpus, synth_cpus = [], [], [], []
        for attempt in range(args.repeat):
            cpu = time.process_time()
            floors.append(read_floor_s(files, workers))
            floor_cpus.append(time.process_time() - cpu)
            data_dir = scratch / f"data-w{workers}-{attempt}"
            started, cpu = time.perf_counter(), time.process_time()
            synthesize(tree, data_dir, SynthConfig(), workers=workers, show_progress=False)
            synths.append(time.perf_counter() - started)
            synth_cpus.append(time.process_time() - cpu)
            if attempt + 1 < args.repeat:
                shutil.rmtree(data_dir)
        floor_s, synth_s = min(floors), min(synths)
        row = {
            "workers": workers,
            "read_floor_s": round(floor_s, 3),
            "synth_s": round(synth_s, 3),
            "audio_s_per_s": round(audio_s / synth_s, 1),
            "read_audio_s_per_s": round(audio_s / floor_s, 1),
            "ratio_to_floor": round(synth_s / floor_s, 2),
        }
        if workers == 1:  # worker processes' CPU time is not visible to this process
            row["read_floor_cpu_s"] = round(min(floor_cpus), 3)
            row["synth_cpu_s"] = round(min(synth_cpus), 3)
            row["cpu_ratio_to_floor"] = round(min(synth_cpus) / min(floor_cpus), 2)
        results["synth"].append(row)

    dataset = open_dataset(data_dir)
    records = [r for split in ("train", "valid", "test") for r in dataset.records(split)]
    picked = random.Random(0).sample(records, min(args.renders, len(records)))
    for record in picked:  # map the pages once, as a training epoch after the first does
        dataset.render(record)
    cached_s = best_per_item_s(lambda record: dataset.render(record), picked, args.repeat)
    naive_s = best_per_item_s(lambda record: naive_render(tree, record, dataset.target_lufs), picked, args.repeat)
    results["render"] = {
        "samples": len(picked),
        "segment_s": dataset.segment_s,
        "cached_ms": round(cached_s * 1000, 3),
        "naive_ms": round(naive_s * 1000, 3),
        "speedup": round(naive_s / cached_s, 1),
        "cached_samples_per_s": round(1 / cached_s, 1),
    }
    shutil.rmtree(scratch, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{results['cpus']} CPUs, load average before the run {results['load_average']}")
    print(f"toy tree: {args.tracks} tracks x {args.seconds:g} s = {audio_s:g} s of audio, {len(files)} stem WAVs")
    for row in results["synth"]:
        print(
            f"workers {row['workers']}: read floor {row['read_floor_s']:.2f} s ({row['read_audio_s_per_s']:g} audio-s/s), "
            f"synth {row['synth_s']:.2f} s ({row['audio_s_per_s']:g} audio-s/s) = {row['ratio_to_floor']:.2f}x the floor"
            + (f"; CPU time {row['synth_cpu_s']:.2f} s vs {row['read_floor_cpu_s']:.2f} s = {row['cpu_ratio_to_floor']:.2f}x" if "synth_cpu_s" in row else "")
        )
    render = results["render"]
    print(
        f"render {render['samples']} x {render['segment_s']:g} s samples: cached {render['cached_ms']:.2f} ms, "
        f"naive {render['naive_ms']:.2f} ms -> {render['speedup']:g}x faster"
    )


if __name__ == "__main__":
    main()
