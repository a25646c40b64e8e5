"""Does the learned critic listen? A learning curve of the tiny preset, with audio and muted.

Trains ``mixcritic train --preset tiny`` with its defaults (checkpoints every ``--every`` steps),
then scores each checkpoint with ``mixcritic evaluate`` on the test split twice: with the real
mixes, and with ``--mute-audio`` (digital silence, same prompts). Macro Both is the paper's
headline figure (stem and direction right; "no change" on no-error clips). A critic that listens
scores far above its muted self; one that answers from the prompt scores the same.

    PYTHONPATH=src python bench/learning.py --work /tmp/learning                  # toy data (toy-stems + synth defaults)
    PYTHONPATH=src python bench/learning.py --work /tmp/learning --musdb ../shared/musdb7-cc

Prints a JSON report on stdout (progress on stderr); ``--markdown`` adds the table of
docs/training.md. Training time is wall-clock and user+sys CPU seconds of this process and its
DataLoader workers (the machine may be shared: CPU seconds are the steadier figure).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RUN = [sys.executable, "-m", "mixcritic"]


def cpu_seconds() -> float:
    """user + sys CPU seconds of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_toy_data(work: Path) -> Path:
    """``mixcritic toy-stems`` + ``mixcritic synth`` with their defaults, in ``work`` (kept between runs)."""
    data = work / "toy-data"
    if not (data / "dataset.json").is_file():
        subprocess.run(RUN + ["toy-stems", str(work / "toy")], check=True)
        subprocess.run(RUN + ["synth", str(work / "toy"), "--out", str(data)], check=True)
    return data


def make_musdb_data(work: Path, musdb: Path) -> Path:
    """musdb7-cc (7 s songs) synthesised with 3.5 s chunks, as in docs/performance.md."""
    data = work / "musdb7-data"
    if not (data / "dataset.json").is_file():
        subprocess.run(RUN + ["synth", str(musdb), "--out", str(data), "--segment-s", "3.5", "--valid-fraction", "0.25"], check=True)
    return data


def train(data: Path, run_dir: Path, every: int, max_steps: int | None) -> dict:
    """The tiny preset with its defaults (plus checkpoints every ``every`` steps); timing added."""
    from mixcritic.critics.llm.train import TrainRequest, run_training, preset_settings

    steps = max_steps or preset_settings("tiny")[0].max_steps
    overrides = [("save_steps", every), ("save_total_limit", steps // every + 1)]
    if max_steps:
        overrides.append(("max_steps", max_steps))
    if (run_dir / "train_summary.json").is_file():
        return json.loads((run_dir / "bench_timing.json").read_text())
    started_wall, started_cpu = time.perf_counter(), cpu_seconds()
    summary = run_training(TrainRequest(data, run_dir, "tiny", tuple(overrides), device="cpu", progress=False))
    timing = {"steps": summary["global_step"], "train_wall_s": round(time.perf_counter() - started_wall, 1),
              "train_cpu_s": round(cpu_seconds() - started_cpu, 1), "final_loss": summary["final_loss"]}
    (run_dir / "bench_timing.json").write_text(json.dumps(timing))
    return timing


def macro_both(data: Path, model: Path, out: Path, mute: bool, limit: int | None) -> float:
    """Macro Both of ``model`` on the test split (``evaluate``'s own code), muted or not."""
    from mixcritic.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(data_dir=data, model_dir=model, split="test", limit=limit, out_dir=out, device="cpu",
                            mute_audio=mute, batch_size=16)
    return evaluate(config)["metrics"]["by_category"]["macro"]["both"]


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the run's complete checkpoints, by step."""
    from mixcritic.critics.llm.checkpoint import CHECKPOINT_PATTERN, is_complete

    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and is_complete(p)]
    return sorted(found)


def curve(data: Path, run_dir: Path, limit: int | None, final_only: bool) -> list[dict]:
    """Macro Both with audio and muted at every checkpoint (or only the last)."""
    points = checkpoints(run_dir)
    rows = []
    for step, folder in points[-1:] if final_only else points:
        print(f"evaluating step {step}", file=sys.stderr)
        audio = macro_both(data, folder, run_dir / "bench-eval" / f"{step}-audio", False, limit)
        muted = macro_both(data, folder, run_dir / "bench-eval" / f"{step}-muted", True, limit)
        rows.append({"step": step, "macro_both_audio": round(audio, 4), "macro_both_muted": round(muted, 4),
                     "gap_points": round(100 * (audio - muted), 1)})
    return rows


def markdown(report: dict) -> str:
    """The learning-curve table of docs/training.md."""
    lines = ["| data | step | macro Both, audio | macro Both, muted | gap (points) |", "|---|---|---|---|---|"]
    for name, part in report["datasets"].items():
        for row in part["curve"]:
            lines.append(f"| {name} | {row['step']} | {100 * row['macro_both_audio']:.1f} % | "
                         f"{100 * row['macro_both_muted']:.1f} % | {row['gap_points']:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tiny-preset learning curve: macro Both with audio and muted.")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data, runs, evaluations; reused)")
    parser.add_argument("--data", type=Path, default=None, help="toy dataset (default: toy-stems + synth defaults in --work)")
    parser.add_argument("--musdb", type=Path, default=None, help="also train and score on musdb7-cc (its folder)")
    parser.add_argument("--every", type=int, default=250, help="checkpoint (curve point) every N steps")
    parser.add_argument("--max-steps", type=int, default=None, help="override the preset's step count")
    parser.add_argument("--limit", type=int, default=None, help="score a stratified draw of N test clips (default all)")
    parser.add_argument("--markdown", action="store_true", help="also print the docs table on stderr")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    args.work.mkdir(parents=True, exist_ok=True)
    sets = {"toy": args.data or make_toy_data(args.work)}
    if args.musdb:
        sets["musdb7-cc"] = make_musdb_data(args.work, args.musdb)
    report = {"preset": "tiny", "every": args.every, "limit": args.limit, "datasets": {}}
    for name, data in sets.items():
        run_dir = args.work / f"run-{name}"
        print(f"training on {name}", file=sys.stderr)
        timing = train(data, run_dir, args.every, args.max_steps)
        report["datasets"][name] = {"data": str(data), **timing,
                                    "curve": curve(data, run_dir, args.limit, final_only=name != "toy")}
    print(json.dumps(report, indent=2))
    if args.markdown:
        print(markdown(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
