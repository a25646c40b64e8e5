"""What a new user hit in `critique` (issue 13): silent stems judged, a verdict that contradicted
the answer beside it. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from critic_doubles import STAND_IN_SETTINGS, StandInMeasured
from mixcritic.cli import app
from mixcritic.critics import Judgement
from mixcritic.critique import json_schema
from mixcritic.labels import Label
from mixcritic.templates import parse_response

runner = CliRunner()
RATE_HZ = 44_100


def noise(seconds: float, amp: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal((int(round(seconds * RATE_HZ)), 2))).astype(np.float32)


def song(folder: Path, bass: np.ndarray) -> Path:
    folder.mkdir()
    sf.write(folder / "drums.wav", noise(25.0, 0.1, 1), RATE_HZ, subtype="FLOAT")
    sf.write(folder / "vocals.wav", noise(25.0, 0.05, 2), RATE_HZ, subtype="FLOAT")
    sf.write(folder / "bass.wav", bass, RATE_HZ, subtype="FLOAT")
    return folder


def use_critic(monkeypatch, tmp_path, critic) -> str:
    monkeypatch.setattr("mixcritic.critics.load_critic", lambda *a, **k: critic)
    (tmp_path / "run").mkdir(exist_ok=True)
    return str(tmp_path / "run")


def critique(*args: str):
    result = runner.invoke(app, ["critique", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def test_a_digitally_silent_stem_is_never_judged_nor_present(tmp_path, monkeypatch):
    folder = song(tmp_path / "s", np.zeros((25 * RATE_HZ, 2), dtype=np.float32))
    model = use_critic(monkeypatch, tmp_path, StandInMeasured(Label.for_flaw("very_loud", "bass")))
    result = critique(str(folder), "--anchor", "drums", "--model", model, "--json")
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, json_schema())
    assert doc["input"]["stems_present"] == ["drums", "vocals"]
    assert [f["reason"] for f in doc["input"]["ignored"] if f["path"].endswith("bass.wav")] == [
        "digitally silent (every sample is zero): not judged and not listed as present"]
    assert "Warning: bass.wav is digitally silent" in result.stderr
    assert [s["verdict"] for s in doc["segments"]] == ["stem_inactive"] * 3  # "bass much too loud" is not used
    assert not doc["summary"]["stems"]


def test_a_stem_silent_in_one_segment_is_not_judged_there(tmp_path, monkeypatch):
    bass = noise(25.0, 0.08, 3)
    bass[: 10 * RATE_HZ] = 0.0  # the bass enters at 10 s
    folder = song(tmp_path / "s", bass)
    model = use_critic(monkeypatch, tmp_path, StandInMeasured(Label.for_flaw("very_loud", "bass")))
    doc = json.loads(critique(str(folder), "--anchor", "drums", "--model", model, "--json").stdout)
    jsonschema.validate(doc, json_schema())
    assert [(s["verdict"], s["not_judged"]) for s in doc["segments"]] == [
        ("stem_inactive", ["bass"]), ("too_loud", []), ("too_loud", [])]
    table = critique(str(folder), "--anchor", "drums", "--model", model).stdout
    assert "bass silent here (not judged)" in table
    assert "1 answer(s) named a stem that is silent in that segment; not used" in table


class WordyLLM:
    """An LLM-like critic whose answer mixes a mild word with a severe range."""

    engine, needs_stems, settings = "llm", False, {**STAND_IN_SETTINGS, "engine": "llm"}
    TEXT = "The drums stem is a bit too hot next to the reference. 6 to 12 dB."

    def describe(self):
        return "wordy LLM stand-in"

    def judge(self, segments):
        return [Judgement(parse_response(self.TEXT), self.TEXT) for _ in segments]


def test_the_advice_shown_says_what_the_verdict_says(tmp_path, monkeypatch):
    folder = song(tmp_path / "s", noise(25.0, 0.08, 3))
    model = use_critic(monkeypatch, tmp_path, WordyLLM())
    assert parse_response(WordyLLM.TEXT) == Label("very_loud", "drums", (-12, -6))
    out = critique(str(folder), "--anchor", "vocals", "--model", model)
    rows = [line for line in out.stdout.splitlines() if "drums much too loud" in line]
    assert len(rows) == 3
    for row in rows:
        assert "a bit too hot" not in row  # the mild words that contradicted "much too loud"
        advice = row.split("│")[4].strip()
        assert parse_response(advice) == Label("very_loud", "drums", (-12, -6)), advice
    assert "Advice is each answer as parsed; --json has the critic's words verbatim." in out.stdout
    doc = json.loads(critique(str(folder), "--anchor", "vocals", "--model", model, "--json").stdout)
    assert {s["text"] for s in doc["segments"]} == {WordyLLM.TEXT}


def test_a_truncated_stem_is_refused_naming_it_and_pad_accepts_it(tmp_path, monkeypatch):
    folder = song(tmp_path / "s", noise(0.028, 0.08, 3))  # a 0.028 s bass beside 25 s stems
    model = use_critic(monkeypatch, tmp_path, StandInMeasured(Label.for_flaw("very_loud", "bass")))
    refused = runner.invoke(app, ["critique", str(folder), "--anchor", "drums", "--model", model])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {folder / 'bass.wav'}: 0.028 s long beside a 25.00 s stem, which looks like a truncated or broken "
        "export; export it again at full length, or pass --pad to pad it with silence")
    padded = critique(str(folder), "--anchor", "drums", "--model", model, "--pad", "--json")
    files = {Path(f["path"]).name: f["padded_s"] for f in json.loads(padded.stdout)["input"]["files"]}
    assert files["bass.wav"] == pytest.approx(24.972, abs=1e-3)
    assert "bass.wav is 24.972 s shorter than the longest stem; padded with silence at the end" in padded.stderr
