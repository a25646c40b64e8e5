"""The issue's end-to-end check: `critique --json` with no model on real songs with odd file names.

For every song of ``../shared/musdb7-cc`` it writes the stems as "Bass Guitar.wav", "Drum Kit.wav",
"Keys and Guitars.wav", "Lead Vox.wav" (44.1 kHz stereo float WAV), once with the bass 9 dB too
loud and once with the vocals 9 dB too quiet, runs

    python -m mixcritic critique FOLDER --anchor drums --json      (MIXCRITIC_MODEL unset)

and counts the judged segments that name the flawed stem and direction. The built-in critic is
fit on these 12 songs, so this checks the path end to end, not accuracy on unseen songs.

    PYTHONPATH=src python bench/measured_session.py [--split test]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUSDB7 = ROOT.parent / "shared" / "musdb7-cc"
FILE_NAMES = {"bass": "Bass Guitar.wav", "drums": "Drum Kit.wav", "other": "Keys and Guitars.wav", "vocals": "Lead Vox.wav"}
FLAWS = (("bass", 9.0, "too_loud"), ("vocals", -9.0, "too_quiet"))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import soundfile as sf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=MUSDB7)
    parser.add_argument("--split", choices=("train", "test", "both"), default="both")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "MIXCRITIC_MODEL"}
    env["PYTHONPATH"] = str(ROOT / "src")
    splits = ("train", "test") if args.split == "both" else (args.split,)
    named = judged = failures = 0
    with tempfile.TemporaryDirectory(prefix="mixcritic-session-") as tmp:
        for split in splits:
            for song in sorted(p for p in (args.source / split).iterdir() if p.is_dir()):
                for stem, gain_db, verdict in FLAWS:
                    folder = Path(tmp) / f"{song.name}-{stem}"
                    folder.mkdir()
                    for name, file_name in FILE_NAMES.items():
                        audio, rate = sf.read(str(song / f"{name}.flac"), dtype="float32")
                        if name == stem:
                            audio = audio * np.float32(10 ** (gain_db / 20))
                        sf.write(str(folder / file_name), audio, rate, subtype="FLOAT")
                    result = subprocess.run([sys.executable, "-m", "mixcritic", "critique", str(folder), "--anchor", "drums", "--json"],
                                            capture_output=True, text=True, env=env)
                    if result.returncode != 0:
                        failures += 1
                        print(f"{song.name} {stem}: exit {result.returncode}: {result.stderr.strip()[-200:]}")
                        continue
                    document = json.loads(result.stdout)
                    segments = [s for s in document["segments"] if s.get("verdict") in ("balanced", "too_loud", "too_quiet")]
                    hits = sum(s.get("stem") == stem and s.get("verdict") == verdict for s in segments)
                    named, judged = named + hits, judged + len(segments)
                    answers = ", ".join(f"{s.get('verdict')} {s.get('stem') or ''} {s.get('confidence')}" for s in document["segments"])
                    print(f"{split:5s} {song.name[:28]:28s} {stem:6s} {gain_db:+.0f} dB  engine={document['settings'].get('engine')}  [{answers}]", flush=True)
    print(f"named the flawed stem and direction in {named} of {judged} judged segments"
          f" ({100 * named / max(judged, 1):.0f} %); {failures} runs failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
