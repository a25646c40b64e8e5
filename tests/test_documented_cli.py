"""Documented behaviour of stem discovery and the CLI that had no test: `Bassoon.wav` is not bass,
hidden `._Bass.wav` files are ignored, and MIXCRITIC_DEBUG=1 shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mixcritic.session import open_session, stem_for_name

RATE_HZ = 44_100


def tone(seconds: float, freq_hz: float, amp: float = 0.1) -> np.ndarray:
    t = np.arange(int(round(seconds * RATE_HZ))) / RATE_HZ
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_bassoon_is_not_bass_but_bass_di_is():
    # docs/critique.md: aliases match whole tokens, so "Bassoon" is another instrument
    assert stem_for_name("Bassoon") == (None, "unmatched")
    assert stem_for_name("Bassoon 2") == (None, "unmatched")
    assert stem_for_name("Bass DI") == ("bass", "name")
    assert stem_for_name("bass") == ("bass", "name")


def test_a_folder_with_bassoon_and_an_appledouble_bass_file(tmp_path):
    folder = tmp_path / "session"
    folder.mkdir()
    sf.write(folder / "Drums.wav", tone(2.0, 60), RATE_HZ)
    sf.write(folder / "Bassoon.wav", tone(2.0, 110), RATE_HZ)
    sf.write(folder / "Bass.wav", tone(2.0, 55, 0.2), RATE_HZ)
    (folder / "._Bass.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork, not audio")
    session = open_session(folder, "drums")
    assert {f.path.name: (f.stem, f.how) for f in session.files} == {
        "Drums.wav": ("drums", "name"), "Bass.wav": ("bass", "name"), "Bassoon.wav": ("other", "unmatched"),
    }
    assert {f.path.name: f.reason for f in session.ignored} == {"._Bass.wav": "a hidden file"}
    # the bass stem is Bass.wav alone (summed with nothing else), resampled to the session rate
    bass = session.audio["bass"]
    assert float(np.sqrt(np.mean(bass.astype(np.float64) ** 2))) == pytest.approx(0.2 / np.sqrt(2), rel=0.01)
    assert float(np.sqrt(np.mean(session.audio["other"].astype(np.float64) ** 2))) == pytest.approx(0.1 / np.sqrt(2), rel=0.01)


def run_cli(*args: str, debug: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MIXCRITIC_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    if debug is not None:
        env["MIXCRITIC_DEBUG"] = debug
    return subprocess.run([sys.executable, "-m", "mixcritic", *args], capture_output=True, text=True, env=env, timeout=120)


def test_mixcritic_debug_shows_the_traceback_of_a_user_error(tmp_path):
    args = ("evaluate", str(tmp_path))  # neither --model nor --baseline: a MixcriticError
    plain = run_cli(*args, debug=None)
    assert plain.returncode == 1
    assert plain.stderr.strip() == "Error: give either --model RUN or --baseline NAME (exactly one)"
    assert "Traceback" not in plain.stderr and plain.stdout == ""
    off = run_cli(*args, debug="0")
    assert off.returncode == 1 and "Traceback" not in off.stderr
    debug = run_cli(*args, debug="1")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    last = debug.stderr.strip().splitlines()[-1]
    assert last.endswith("MixcriticError: give either --model RUN or --baseline NAME (exactly one)"), last
    assert 'File "' in debug.stderr and "evaluate.py" in debug.stderr  # where it was raised
