"""Leave one song out through the CLI path: the measured critic against the loudness baseline.

For each of the 12 songs of ``../shared/musdb7-cc`` in turn, a source tree whose ``test/`` holds
that song and whose ``train/`` holds the other 11 (symlinks, nothing copied) is synthesised with
the defaults at 5 s segments (``synth --segment-s 5``: 10 train songs, 1 valid song), then

* ``train --engine measured`` + ``evaluate --model RUN`` (fits on train + valid: 11 songs), and
* ``evaluate --baseline loudness`` (thresholds fitted on the valid song, as the baseline does),

each scoring the held-out song's 30 manifest samples. The 360 answers of each predictor are pooled
into the paper's tables (``mixcritic.metrics``). Both predictors see exactly the same samples, so
the gap between them is a like-for-like comparison on unseen songs, which a 4-song test split
cannot give.

    PYTHONPATH=src python bench/measured_loso_cli.py            # about 35 s on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measured_cv import DEFAULT_SOURCE, summary  # noqa: E402  (the same pooled metrics as the cross-validation bench)


def song_folders(source: Path) -> list[Path]:
    return sorted(p for split in ("train", "test") for p in (source / split).iterdir() if p.is_dir())


def fold_tree(songs: list[Path], held_out: Path, root: Path) -> Path:
    """A source tree with ``held_out`` as the only test song, the others as train (symlinks)."""
    for song in songs:
        link = root / ("test" if song == held_out else "train") / song.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(song.resolve(), target_is_directory=True)
    return root


def cases_of(report_dir: Path, dataset) -> tuple[list, list]:
    from mixcritic.evaluate import cases_from, read_predictions

    records = dataset.records("test")
    predictions = read_predictions(report_dir / "predictions.jsonl")
    confidences = [predictions[r["id"]].get("confidence") for r in records]
    return cases_from(records, predictions), confidences


def main(argv: list[str] | None = None) -> int:
    from mixcritic.commands.train import train_measured
    from mixcritic.dataset import open_dataset
    from mixcritic.evaluate import EvaluateConfig, evaluate
    from mixcritic.synthesis import SynthConfig, synthesize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--json", type=Path, default=None, help="also write the pooled results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    songs = song_folders(args.source)
    pooled: dict[str, tuple[list, list]] = {"measured": ([], []), "loudness": ([], [])}
    per_song = []
    with tempfile.TemporaryDirectory(prefix="mixcritic-loso-") as tmp:
        for k, song in enumerate(songs):
            fold = Path(tmp) / f"fold{k:02d}"
            synthesize(fold_tree(songs, song, fold / "source"), fold / "data", SynthConfig(segment_s=5.0), show_progress=False)
            dataset = open_dataset(fold / "data")
            train_measured(fold / "data", fold / "run")
            evaluate(EvaluateConfig(data_dir=fold / "data", model_dir=fold / "run", out_dir=fold / "eval-measured"))
            evaluate(EvaluateConfig(data_dir=fold / "data", baseline="loudness", out_dir=fold / "eval-loudness"))
            row = {"song": song.name}
            for name in pooled:
                cases, confidences = cases_of(fold / f"eval-{name}", dataset)
                pooled[name][0].extend(cases)
                pooled[name][1].extend(confidences)
                row[name] = round(summary(cases, confidences)["macro_both"], 3)
            per_song.append(row)
            print(f"{song.name:40s} measured {100 * row['measured']:5.1f} %  loudness {100 * row['loudness']:5.1f} %", file=sys.stderr, flush=True)
    results = {name: summary(*pooled[name]) for name in pooled}
    print("| predictor (leave one song out, 12 x 30 samples) | macro Both | no_error Both | magnitude given Both | ECE |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        ece = f"{100 * r['ece']:.1f} %" if "ece" in r else "-"
        print(f"| {name} | {100 * r['macro_both']:.1f} % | {100 * r['no_error_both']:.1f} % | {100 * r['magnitude_given_both']:.1f} % | {ece} |")
    if args.json:
        args.json.write_text(json.dumps({"pooled": results, "per_song": per_song}, indent=1))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
