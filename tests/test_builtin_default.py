"""The built-in measured critic is what a user gets with no model configured: a real session with
studio file names, a 9 dB flaw on the bass or the vocals, found by `mixcritic critique`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mixcritic.cli import app
from mixcritic.critique import json_schema

runner = CliRunner()
from conftest import shared_dir  # noqa: E402 - $MIXCRITIC_SHARED or ../shared, as every real-music test
SHARED = shared_dir()
MUSDB7 = SHARED / "musdb7-cc"
ODD_NAMES = {"bass": "Bass Guitar.wav", "drums": "Drum Kit.wav", "other": "Keys and Guitars.wav", "vocals": "Lead Vox.wav"}
needs_musdb7 = pytest.mark.skipif(not MUSDB7.is_dir(), reason=f"real-music fixture {MUSDB7} is absent (set MIXCRITIC_SHARED)")


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """No --model, no $MIXCRITIC_MODEL, nothing in the user data folder."""
    monkeypatch.delenv("MIXCRITIC_MODEL", raising=False)
    monkeypatch.setattr("mixcritic.critique.default_model_dir", lambda: tmp_path / "no-user-model")


def write_session(track: Path, out: Path, flaw_stem: str, gain_db: float) -> Path:
    """The track's stems under studio-style names, ``flaw_stem`` scaled by ``gain_db``."""
    out.mkdir(parents=True)
    for stem, name in ODD_NAMES.items():
        audio, rate = sf.read(track / f"{stem}.flac", dtype="float32")
        if stem == flaw_stem:
            audio = audio * np.float32(10 ** (gain_db / 20))
        sf.write(out / name, audio, rate, subtype="FLOAT")
    return out


@needs_musdb7
@pytest.mark.parametrize("flaw_stem, gain_db, verdict", [("bass", 9.0, "too_loud"), ("vocals", -9.0, "too_quiet")])
def test_builtin_names_a_9_db_flaw_on_real_songs(no_model, tmp_path, flaw_stem, gain_db, verdict):
    tracks = sorted(MUSDB7.glob("*/*/"))
    assert len(tracks) == 12
    hits = judged = 0
    for number, track in enumerate(tracks):
        session = write_session(track, tmp_path / f"song{number}", flaw_stem, gain_db)
        result = runner.invoke(app, ["critique", str(session), "--anchor", "drums", "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        jsonschema.validate(doc, json_schema())
        assert doc["settings"]["engine"] == "measured" and doc["settings"]["model"] == "builtin"
        assert {Path(f["path"]).name: f["stem"] for f in doc["input"]["files"]} == {n: s for s, n in ODD_NAMES.items()}
        for segment in doc["segments"]:
            if segment["verdict"] in ("balanced", "too_loud", "too_quiet", "unparsed"):
                judged += 1
                hits += segment["stem"] == flaw_stem and segment["verdict"] == verdict
                assert 0.0 <= segment["confidence"] <= 1.0
    assert judged >= 16
    assert hits / judged >= 0.7, f"{flaw_stem} {gain_db:+g} dB named in {hits} of {judged} judged segments"


@pytest.mark.parametrize("flaw_stem, gain_db, verdict", [("bass", 9.0, "too_loud"), ("vocals", -9.0, "too_quiet")])
def test_builtin_finds_a_9_db_flaw_on_toy_songs(flaw_stem, gain_db, verdict):
    """Toy songs mix their stems at the balance the built-in critic knows, so a 9 dB flaw stands out."""
    from mixcritic.critics import load_critic
    from mixcritic.critique import CritiqueConfig, run_critique
    from mixcritic.session import Session
    from mixcritic.toy import TOY_RATE_HZ, make_toy_song

    critic = load_critic("builtin")
    hits = judged = 0
    for seed in range(100, 104):
        audio = {stem: a.mean(axis=1) for stem, a in make_toy_song(seed, 20.0).items()}
        audio[flaw_stem] = audio[flaw_stem] * np.float32(10 ** (gain_db / 20))
        session = Session("stems", None, "drums", tuple(audio), audio, TOY_RATE_HZ)
        for segment in run_critique(session, critic, CritiqueConfig.from_settings(critic.settings)).segments:
            judged += segment.verdict in ("balanced", "too_loud", "too_quiet", "unparsed")
            hits += segment.stem == flaw_stem and segment.verdict == verdict
    assert judged == 16 and hits >= 14, (hits, judged)


def test_critique_with_the_builtin_critic_never_imports_torch(tmp_path):
    """The whole `critique` command on the built-in critic, in a fresh interpreter: no torch, no transformers."""
    import subprocess
    import sys

    from mixcritic.toy import TOY_RATE_HZ, make_toy_song

    for stem, audio in make_toy_song(3, 6.0).items():
        sf.write(str(tmp_path / ODD_NAMES[stem]), audio, TOY_RATE_HZ)
    code = (
        "import sys\n"
        "from mixcritic.cli import app\n"
        f"app(['critique', {str(tmp_path)!r}, '--anchor', 'drums', '--model', 'builtin', '--json'], standalone_mode=False)\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'bitsandbytes', 'peft') if m in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["engine"] == "measured"
    assert "HEAVY []" in result.stderr
