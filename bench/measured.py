"""Speed of the measured critic on a 3-minute four-stem session, against only reading the files.

    PYTHONPATH=src python bench/measured.py [--minutes 3] [--repeats 5] [--cli]

The session is four 44.1 kHz stereo 16-bit WAV stems, ``--minutes`` long: the stems of one
``../shared/musdb7-cc`` song tiled end to end (a procedural toy song when musdb7-cc is absent),
written to a temporary folder. Each timing is a whole fresh Python process (interpreter start and
imports included), the median of ``--repeats``, runs interleaved:

* **read only**: ``soundfile.read`` of the four files, nothing else (the floor);
* **measured path**: open the session as ``critique`` does (``session.open_session``: read,
  downmix, resample to 24 kHz with soxr), cut it into the built-in critic's segments, judge every
  segment with the built-in measured critic;
* with ``--cli``: ``python -m mixcritic critique FOLDER --anchor drums --json`` (the full
  command, built-in critic by default) when this version of the CLI supports it;
* with ``--baseline-src DIR`` (and ``--cli``): the same command run from another version's
  ``src`` folder (e.g. ``git archive REV src | tar -x -C /tmp/before``), for before/after ratios
  measured in the same run.

Target (issue 9, item 6): the measured path at most 6x the read-only process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUSDB7 = ROOT.parent / "shared" / "musdb7-cc"
RATE_HZ = 44_100

READ_ONLY = """
import sys, soundfile
for path in sys.argv[1:]:
    soundfile.read(path, dtype="float32")
"""

MEASURED_PATH = """
import sys
from pathlib import Path
from mixcritic.critics import Segment
from mixcritic.critics.measured import load_builtin
from mixcritic.session import open_session
critic = load_builtin()
session = open_session(Path(sys.argv[1]), "drums", rate_hz=critic.settings["sample_rate_hz"])
step = int(critic.settings["segment_s"] * session.rate_hz)
segments = [
    Segment(None, {s: a[start:start + step] for s, a in session.audio.items()}, "drums", "", session.stems_present)
    for start in range(0, session.num_samples - step + 1, step)
]
answers = critic.judge(segments)
assert len(answers) == len(segments) > 0
assert "torch" not in sys.modules and "transformers" not in sys.modules
"""


def write_session(folder: Path, minutes: float) -> tuple[Path, str]:
    """Four stereo WAV stems ``minutes`` long; returns the folder and where the audio came from."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    samples = int(minutes * 60 * RATE_HZ)
    songs = sorted(p for p in MUSDB7.glob("*/*") if p.is_dir()) if MUSDB7.is_dir() else []
    if songs:
        source = f"musdb7-cc '{songs[0].name}' tiled"
        for stem in ("bass", "drums", "other", "vocals"):
            audio, rate = sf.read(str(songs[0] / f"{stem}.flac"), dtype="float32", always_2d=True)
            assert rate == RATE_HZ
            sf.write(str(folder / f"{stem}.wav"), np.resize(audio, (samples, audio.shape[1])), RATE_HZ, subtype="PCM_16")
    else:
        from mixcritic.toy import make_toy_song

        source = "procedural toy song"
        for stem, audio in make_toy_song(0, minutes * 60).items():
            sf.write(str(folder / f"{stem}.wav"), audio, RATE_HZ, subtype="PCM_16")
    return folder, source


def run_process(args: list[str], src: Path = ROOT / "src") -> float:
    """Wall seconds of one fresh process with ``src`` on PYTHONPATH; raises if it fails."""
    env_path = str(src)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": env_path})
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {result.stderr.strip()[-500:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="also time `mixcritic critique FOLDER --anchor drums --json`")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="with --cli: also time the command from this other version's src folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mixcritic-bench-") as tmp:
        folder, source = write_session(Path(tmp) / "session", args.minutes)
        files = [str(p) for p in sorted(folder.glob("*.wav"))]
        kinds = {"read only": ["-c", READ_ONLY, *files], "measured path": ["-c", MEASURED_PATH, str(folder)]}
        sources: dict[str, Path] = {}
        if args.cli:
            cli = ["-m", "mixcritic", "critique", str(folder), "--anchor", "drums", "--json"]
            if args.baseline_src is not None:
                kinds["critique --json (CLI), baseline src"] = cli
                sources["critique --json (CLI), baseline src"] = args.baseline_src.resolve()
            kinds["critique --json (CLI)"] = cli
        times: dict[str, list[float]] = {k: [] for k in kinds}
        failed: dict[str, str] = {}
        for _ in range(args.repeats):
            for kind, command in kinds.items():
                if kind in failed:
                    continue
                try:
                    times[kind].append(run_process(command, sources.get(kind, ROOT / "src")))
                except RuntimeError as exc:
                    failed[kind] = str(exc)
    floor = statistics.median(times["read only"])
    print(f"session: 4 stems x {args.minutes:g} min, 44.1 kHz stereo 16-bit WAV ({source}); median of {args.repeats} fresh processes\n")
    print("| process | wall s (median) | min | ratio to read only |")
    print("|---|---|---|---|")
    for kind, values in times.items():
        if values:
            median = statistics.median(values)
            print(f"| {kind} | {median:.2f} | {min(values):.2f} | {median / floor:.2f}x |")
    for kind, message in failed.items():
        print(f"| {kind} | failed: {message[:200]} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
