"""Regenerate the built-in measured critic, ``src/mixcritic/critics/measured/builtin.json``.

Synthesises ``../shared/musdb7-cc`` (12 real songs, CC BY-NC-SA 4.0 MedleyDB excerpts) at 5 s
segments into a temporary folder, fits the measured critic on all 12 songs (train + test splits)
and writes the fitted numbers (no audio) as JSON. Deterministic: running it twice gives the same
file, and ``tests/test_measured.py`` checks that the shipped file equals what it produces.

    python scripts/build_builtin_critic.py [--source ../shared/musdb7-cc] [--out PATH] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "musdb7-cc"
DEFAULT_OUT = ROOT / "src" / "mixcritic" / "critics" / "measured" / "builtin.json"
SEGMENT_S = 5.0
"""Segment length of the fit: the paper's evaluation protocol (the excerpts are 6.8 s long)."""
FITTED_ON = "12 real songs"


def build(source: Path) -> dict:
    """Synthesise ``source`` to a temporary folder, fit on every song, return the critic's JSON."""
    from mixcritic.critics.measured import fit_measured
    from mixcritic.synthesis import SynthConfig, synthesize

    with tempfile.TemporaryDirectory(prefix="mixcritic-builtin-") as tmp:
        data = Path(tmp) / "data"
        synthesize(source, data, SynthConfig(segment_s=SEGMENT_S, valid_fraction=0.0), show_progress=False)
        critic = fit_measured(data, ("train", "test"), fitted_on=FITTED_ON)
    data = critic.to_dict()
    data["fit"]["source"] = "musdb7-cc: 12 MUSDB18 preview excerpts from MedleyDB, CC BY-NC-SA 4.0 (statistics only, no audio)"
    return data


def render(data: dict) -> str:
    """The file's exact text."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="musdb7-cc root")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    parser.add_argument("--check", action="store_true", help="only compare with --out; exit 1 when it differs")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"Error: {args.source}: not found; pass --source with the musdb7-cc folder", file=sys.stderr)
        return 2
    text = render(build(args.source))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from a fresh fit'}")
        return 0 if same else 1
    from mixcritic.files import write_text_atomic

    write_text_atomic(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
