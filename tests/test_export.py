"""`critique --export DIR`: per judged segment the mix and the corrected mix (WAV), and a level plot.

The corrected file must differ from the mix by exactly the advised gain on the named stem: a
least-squares fit of each WAV against the session's stems recovers the per-stem factors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mixcritic.cli import app
from mixcritic.export import correction_midpoint_db, segment_name
from mixcritic.labels import Label
from mixcritic.session import open_session

from critic_doubles import STAND_IN_SETTINGS, StandInMeasured

runner = CliRunner()
from conftest import shared_dir  # noqa: E402 - $MIXCRITIC_SHARED or ../shared, as every real-music test
SHARED = shared_dir()
SONG = SHARED / "musdb7-cc" / "test" / "Grants - PunchDrunk"


class ScriptedCritic(StandInMeasured):
    """Says "bass much too loud" (reduce 6-12 dB) about every 3 s segment, and offers a typical range."""

    def __init__(self):
        super().__init__(Label.for_flaw("very_loud", "bass"), settings={**STAND_IN_SETTINGS, "segment_s": 3.0})

    def typical_range_db(self, anchor_stem):
        return {"bass": (-3.0, 3.0), "vocals": (0.0, 6.0)}


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr("mixcritic.critics.load_critic", lambda *a, **k: ScriptedCritic())
    return run


def factors(audio: np.ndarray, stems: dict[str, np.ndarray]) -> dict[str, float]:
    """Least-squares gain of each stem in ``audio``."""
    names = list(stems)
    matrix = np.stack([stems[n].astype(np.float64) for n in names], axis=1)
    weights, *_ = np.linalg.lstsq(matrix, audio.astype(np.float64), rcond=None)
    return dict(zip(names, weights))


def test_midpoint_and_names():
    assert correction_midpoint_db((-12, -6)) == -9.0 and correction_midpoint_db((3, 6)) == 4.5
    assert correction_midpoint_db(None) == 0.0
    assert segment_name(2, "too_loud", "bass", "very_loud") == "seg03_bass-much-too-loud"
    assert segment_name(0, "balanced", None, "no_error") == "seg01_balanced"


@pytest.mark.skipif(not SONG.is_dir(), reason=f"real-music fixture {SONG} is absent (set MIXCRITIC_SHARED)")
def test_export_on_a_real_song_applies_exactly_the_stated_gain(scripted, tmp_path):
    out = tmp_path / "advice"
    result = runner.invoke(app, ["critique", str(SONG), "--anchor", "drums", "--model", str(scripted), "--export", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # --json stays clean: export notes go to stderr
    judged = [s for s in doc["segments"] if s["verdict"] in ("too_loud", "too_quiet", "balanced", "unparsed")]
    assert judged, "no segment was judged"
    manifest = json.loads((out / "export.json").read_text())
    assert [e["index"] for e in manifest["segments"]] == [s["index"] for s in judged]
    session = open_session(SONG, "drums")
    for entry in manifest["segments"]:
        assert entry["stem"] == "bass" and entry["gain_db"] == -9.0
        assert entry["mix"] == f"seg{entry['index'] + 1:02d}_bass-much-too-loud_mix.wav"
        assert entry["fixed"] == f"seg{entry['index'] + 1:02d}_bass-much-too-loud_fixed.wav"
        mix, rate_hz = sf.read(out / entry["mix"], dtype="float32")
        fixed, _ = sf.read(out / entry["fixed"], dtype="float32")
        assert rate_hz == 24_000
        start, stop = round(entry["start_s"] * rate_hz), round(entry["end_s"] * rate_hz)
        stems = {stem: audio[start:stop] for stem, audio in session.audio.items()}
        for stem, factor in factors(mix, stems).items():
            assert factor == pytest.approx(1.0, abs=1e-5), stem
        measured = factors(fixed, stems)
        assert 20 * np.log10(measured["bass"]) == pytest.approx(-9.0, abs=1e-4)  # -9 dB: x0.3548
        for stem in ("drums", "other", "vocals"):
            assert measured[stem] == pytest.approx(1.0, abs=1e-5), stem
    png = out / "levels.png"
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and manifest["plot"] == "levels.png"
    assert "Exported" in result.stderr


def test_export_to_a_file_is_refused_before_any_work(scripted, tmp_path):
    afile = tmp_path / "advice.txt"
    afile.write_text("keep")
    result = runner.invoke(app, ["critique", str(tmp_path / "nope"), "--anchor", "drums", "--model", str(scripted), "--export", str(afile)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == f"Error: --export {afile}: is a file, not a folder; give a folder for the WAV and PNG files"
    assert afile.read_text() == "keep"
