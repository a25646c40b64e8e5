"""Accuracy of the measured critic on real songs it has not seen, on the paper's protocol.

Three numbers per setting, all at 5 s segments (``synth --segment-s 5``) of ``../shared/musdb7-cc``:

* ``loso-train``: leave-one-song-out over the 8 train songs (fit on 7, judge the 8th);
* ``test``: fit on the 8 train songs, judge the 4 test songs' manifest samples (``test.jsonl``,
  the exact samples ``mixcritic evaluate`` scores: 30 per song);
* ``loso-all``: leave-one-song-out over all 12 songs (what the built-in fit can expect).

``loso-*`` judge the held-out song's full flaw grid (3 anchors x 2 targets x 5 categories) with
``--draws`` gains spread evenly over each category's range, so the estimate does not hinge on one
random gain per sample. Flawed levels are the clean levels plus the gain on the target: exact,
because a stem's band levels shift by exactly its gain (``features.py``). Metrics come from
``mixcritic.metrics`` (macro Both over the 5 categories, no_error Both, magnitude given Both).

    python bench/measured_cv.py                       # the default settings
    python bench/measured_cv.py --grid                # bands x shrinkage (prior tuned by CV each time)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "musdb7-cc"

BAND_SETS = {
    "broadband": (20.0, 12000.0),
    "3-band": (20.0, 250.0, 2000.0, 12000.0),
    "5-band": (20.0, 150.0, 500.0, 2000.0, 6000.0, 12000.0),
    "6-band": (20.0, 100.0, 300.0, 1000.0, 3000.0, 7000.0, 12000.0),
}


def synth(source: Path, out: Path) -> Path:
    from mixcritic.synthesis import SynthConfig, synthesize

    synthesize(source, out, SynthConfig(segment_s=5.0, valid_fraction=0.0), show_progress=False)
    return out


def simulated_cases(critic, chunk, draws: int, tag: str) -> tuple[list, list]:
    """Cases (and confidences) for the full flaw grid of one held-out chunk, ``draws`` gains per category."""
    from mixcritic.critics.measured.critic import judgement_from
    from mixcritic.labels import CATEGORIES, GAIN_RANGE_DB, TARGET_STEMS
    from mixcritic.metrics import Case

    cases, confidences = [], []
    present = [s for s in TARGET_STEMS if s in chunk.levels_db]
    for anchor in present:
        for target in [s for s in present if s != anchor]:
            for category in CATEGORIES:
                low, high = GAIN_RANGE_DB[category]
                for k in range(draws):
                    gain = low + (k + 0.5) / draws * (high - low)
                    levels = dict(chunk.levels_db)
                    levels[target] = levels[target] + gain
                    judgement = judgement_from(critic.posterior_for_levels(levels, anchor))
                    cases.append(Case(f"{tag}.{anchor}.{target}.{category}.{k}", category, target, judgement.label, anchor))
                    confidences.append(judgement.confidence)
    return cases, confidences


def critic_for(chunks, config):
    """What ``fit_measured`` builds from these chunks (the prior tuned by CV on them when None)."""
    from mixcritic.critics.measured.critic import MeasuredCritic, fit_from_chunks, tuned_config, with_bands

    tuned, _ = tuned_config(chunks, config)
    return MeasuredCritic(fit_from_chunks([with_bands(c, tuned) for c in chunks], tuned), tuned, f"{len({c.track for c in chunks})} songs", 5.0)


def loso(chunks, config, draws: int) -> tuple[list, list]:
    from mixcritic.critics.measured.critic import with_bands

    cases, confidences = [], []
    for song in sorted({c.track for c in chunks}):
        critic = critic_for([c for c in chunks if c.track != song], config)
        for chunk in (c for c in chunks if c.track == song):
            more, conf = simulated_cases(critic, with_bands(chunk, critic.config), draws, song)
            cases += more
            confidences += conf
    return cases, confidences


def manifest_cases(critic, dataset, split: str) -> tuple[list, list]:
    """Judge the manifest samples of ``split`` through the critic's public ``judge`` path."""
    from mixcritic.critics import Segment
    from mixcritic.metrics import Case

    cases, confidences = [], []
    for record in dataset.records(split):
        segment = Segment(None, dataset.render_stems(record), record["anchor_stem"], record["instruction"], tuple(record["stems_present"]))
        judgement = critic.judge([segment])[0]
        cases.append(Case(record["id"], record["category"], record["target_stem"], judgement.label, record["anchor_stem"]))
        confidences.append(judgement.confidence)
    return cases, confidences


def summary(cases, confidences) -> dict:
    from mixcritic import metrics

    table = metrics.by_category(cases)
    correct = [metrics.both_correct(c) for c in cases]
    out = {
        "n": len(cases),
        "macro_both": table["macro"]["both"],
        "no_error_both": table["rows"]["no_error"]["both"],
        "magnitude_given_both": table["macro"]["magnitude_given_both"],
        "per_category_both": {k: round(v["both"], 3) for k, v in table["rows"].items()},
    }
    if all(c is not None for c in confidences):  # a baseline gives no confidence
        out["ece"] = metrics.expected_calibration_error(confidences, correct)
    return out


def evaluate_config(data: Path, config, draws: int) -> dict:
    from mixcritic.critics.measured.critic import dataset_chunks
    from mixcritic.dataset import open_dataset

    train_chunks, _ = dataset_chunks(data, ("train",), config)
    test_chunks, _ = dataset_chunks(data, ("test",), config)
    fitted = critic_for(train_chunks, config)
    return {
        "prior": fitted.no_error_prior,
        "layout": list(fitted.config.band_edges_hz),
        "loso-train": summary(*loso(train_chunks, config, draws)),
        "test": summary(*manifest_cases(fitted, open_dataset(data), "test")),
        "loso-all": summary(*loso(train_chunks + test_chunks, config, draws)),
    }


def line(name: str, result: dict) -> str:
    cells = []
    for protocol in ("loso-train", "test", "loso-all"):
        r = result[protocol]
        cells.append(f"{protocol} {100 * r['macro_both']:5.1f} / {100 * r['no_error_both']:5.1f} / {100 * r['magnitude_given_both']:5.1f}")
    return f"{name:38s} " + " | ".join(cells) + f"  (fit on train: {result['layout']}, prior {result['prior']})"


def main(argv: list[str] | None = None) -> int:
    from mixcritic.critics.measured import MeasuredConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--data", type=Path, default=None, help="an existing 5 s synth of --source (else synthesised to a temp dir)")
    parser.add_argument("--draws", type=int, default=8, help="gains per category in the leave-one-song-out grids")
    parser.add_argument("--grid", action="store_true", help="sweep bands x shrinkage (the prior tuned by CV each time)")
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mixcritic-cv-") as tmp:
        data = args.data or synth(args.source, Path(tmp) / "data")
        if args.grid:
            settings = [
                {"band_edges_hz": BAND_SETS[b], "shrinkage": s, "_name": f"{b} shrink {s}"}
                for b, s in itertools.product(("broadband", "3-band", "5-band"), (0.25, 0.5, 1.0))
            ]
        else:
            settings = [{"_name": "defaults"}]
        print("setting                                macro Both / no_error Both / magnitude|Both  (%)", file=sys.stderr)
        results = {}
        for setting in settings:
            name = setting.pop("_name")
            result = evaluate_config(data, MeasuredConfig(**setting), args.draws)
            results[name] = result
            print(line(name, result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
