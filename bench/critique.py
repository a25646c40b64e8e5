"""Benchmark `critique`: seconds per minute of audio with the tiny model on CPU, batched vs one
segment at a time.

    PYTHONPATH=src python bench/critique.py [--model RUN] [--minutes 2] [--batch-size 8] [--threads 2]

Without --model a tiny run is built first (toy stems -> synth -> train --preset tiny, as in
`mixcritic demo`) in a temporary folder. The session is a procedural toy song written as four
44.1 kHz stereo WAV stems, so the timing includes reading, resampling, per-segment loudness
normalisation and generation; model loading is timed separately. Each setting is run
``--repeats`` times and the median is reported. Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def write_song(folder: Path, minutes: float, seed: int) -> Path:
    """A toy song as a folder of four stems, ``minutes`` long."""
    import soundfile as sf

    from mixcritic.toy import TOY_RATE_HZ, make_toy_song

    folder.mkdir(parents=True, exist_ok=True)
    for stem, audio in make_toy_song(seed, minutes * 60.0).items():
        sf.write(str(folder / f"{stem}.wav"), audio, TOY_RATE_HZ, subtype="PCM_16")
    return folder


def time_critique(song: Path, critic, batch_size: int, repeats: int) -> tuple[float, list]:
    """Median wall seconds of open_session + run_critique, and the last results."""
    from mixcritic.critique import CritiqueConfig, run_critique
    from mixcritic.session import open_session

    config = CritiqueConfig.from_settings(critic.settings, batch_size=batch_size)
    times, results = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        session = open_session(song, "drums")
        results = run_critique(session, critic, config).segments
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


class NullCritic:
    """Answers instantly: isolates reading, resampling, gating and normalisation from the model."""

    def __init__(self, settings: dict) -> None:
        self.settings = settings

    def generate(self, audio, instructions):
        return ["" for _ in instructions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="Run folder; built with the tiny preset if absent.")
    parser.add_argument("--minutes", type=float, default=2.0, help="Length of the benchmark song.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto, ...")
    parser.add_argument("--encoder", default=None, help="Override the run's encoder location.")
    parser.add_argument("--llm", default=None, help="Override the run's LLM location.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mixcritic.critique import load_model
    from mixcritic.demo import train_tiny_run

    with tempfile.TemporaryDirectory(prefix="mixcritic-bench-") as tmp:
        work = Path(tmp)
        run = args.model
        if run is None:
            start = time.perf_counter()
            run = train_tiny_run(work / "build", args.seed, log=lambda m: None)
            print(f"built a tiny run in {time.perf_counter() - start:.1f} s")
        song = write_song(work / "song", args.minutes, args.seed + 1)
        start = time.perf_counter()
        critic = load_model(run, device=args.device, encoder=args.encoder, llm=args.llm)
        load_s = time.perf_counter() - start
        batched_s, batched = time_critique(song, critic, args.batch_size, args.repeats)
        single_s, single = time_critique(song, critic, 1, args.repeats)
        audio_s, _ = time_critique(song, NullCritic(critic.settings), args.batch_size, args.repeats)
    same = [r.text for r in batched] == [r.text for r in single]
    per_min = lambda s: s / args.minutes  # noqa: E731
    from mixcritic.critique import critic_device

    print(f"\nsong: {args.minutes:g} min, {len(batched)} segments; device {critic_device(critic, args.device)}; "
          f"torch threads {args.threads}; model load {load_s:.2f} s")
    print("| mode | s per minute of audio | x real time |")
    print("|---|---|---|")
    print(f"| batch {args.batch_size} | {per_min(batched_s):.2f} | {60 / per_min(batched_s):.1f} |")
    print(f"| one segment at a time | {per_min(single_s):.2f} | {60 / per_min(single_s):.1f} |")
    print(f"| audio only (read, resample, gate, normalise; no model) | {per_min(audio_s):.2f} | {60 / per_min(audio_s):.1f} |")
    print(f"\nbatched speed-up: {single_s / batched_s:.2f}x; identical answers: {same}")


if __name__ == "__main__":
    main()
