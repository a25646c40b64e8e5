"""`mixcritic critique` on the command line: bad inputs, model lookup, table and --json output.

Formatting is tested here with a scripted critic; tests/test_critique_e2e.py runs a real tiny checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mixcritic.cli import app
from critic_doubles import StandInMeasured
from mixcritic.critics import Judgement
from mixcritic.critique import json_schema
from mixcritic.labels import Label
from mixcritic.templates import parse_response, render_response

runner = CliRunner()
RATE_HZ = 44_100


def noise(seconds: float, amp: float, seed: int, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal((int(round(seconds * RATE_HZ)), channels))).astype(np.float32)


@pytest.fixture
def stems_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "My Song"
    folder.mkdir()
    sf.write(folder / "Drum Kit.wav", noise(25.0, 0.1, 1), RATE_HZ, subtype="PCM_24")
    sf.write(folder / "Bass DI.wav", noise(25.0, 0.05, 2), RATE_HZ, subtype="PCM_16")
    sf.write(folder / "Lead Vox.flac", noise(24.0, 0.03, 3), RATE_HZ)
    sf.write(folder / "Keys.wav", noise(25.0, 0.02, 4), RATE_HZ)
    (folder / "notes.txt").write_text("v3")
    return folder


class ScriptedCritic:
    """An LLM-like critic double: hears the mix, answers from a list, gives no confidence."""

    settings = {"sample_rate_hz": 24_000, "segment_s": 10.0, "target_lufs": -23.0}
    device = "cpu"
    engine = "llm"
    needs_stems = False

    def __init__(self, answers):
        self.answers = list(answers)

    def describe(self):
        return "scripted LLM stand-in"

    def judge(self, segments):
        texts = [self.answers.pop(0) for _ in segments]
        return [Judgement(parse_response(t), t) for t in texts]


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """Replace the critic loader (the seam) with a scripted critic; returns the run dir to pass as --model."""
    run = tmp_path / "run"
    run.mkdir()
    answers = [render_response(Label.for_flaw("loud", "bass"), 0), render_response(Label.for_flaw("very_loud", "bass"), 5),
               "Sounds great to me!"]
    monkeypatch.setattr("mixcritic.critics.load_critic", lambda *a, **k: ScriptedCritic(answers))
    return run


def invoke(*args: str):
    return runner.invoke(app, ["critique", *args])


def test_table_output(stems_dir, scripted):
    result = invoke(str(stems_dir), "--anchor", "drums", "--model", str(scripted))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("0:00.0–0:10.0", "0:10.0–0:20.0", "0:15.0–0:25.0", "bass too loud", "bass much too loud",
                 "not understood", "reduce 3-6 dB", "reduce 6-12 dB"):
        assert text in out
    assert "bass too loud in 2 of 3 segments — reduce 3-6 dB" in out
    assert "could not parse segment 3 (0:15.0–0:25.0): 'Sounds great to me!'" in out
    err = result.stderr
    assert "Lead Vox.flac is 1.000 s shorter than the longest stem; padded with silence at the end" in err
    assert "other   <- Keys.wav" in err and "ignored notes.txt: not an audio file" in err


def test_json_output_is_only_json_and_valid(stems_dir, scripted):
    result = invoke(str(stems_dir), "--anchor", "drums", "--model", str(scripted), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, json_schema())
    assert [(s["start_s"], s["end_s"], s["verdict"]) for s in doc["segments"]] == [
        (0.0, 10.0, "too_loud"), (10.0, 20.0, "too_loud"), (15.0, 25.0, "unparsed")]
    assert doc["input"]["anchor_stem"] == "drums" and doc["settings"]["model"] == str(scripted)
    assert {Path(f["path"]).name: (f["stem"], f["padded_s"]) for f in doc["input"]["files"]} == {
        "Bass DI.wav": ("bass", 0.0), "Drum Kit.wav": ("drums", 0.0), "Keys.wav": ("other", 0.0),
        "Lead Vox.flac": ("vocals", 1.0)}
    assert doc["summary"]["stems"][0]["text"] == "bass too loud in 2 of 3 segments — reduce 3-6 dB"


def test_single_mixed_file(tmp_path, scripted):
    song = tmp_path / "song.ogg"
    sf.write(song, noise(12.0, 0.1, 5), RATE_HZ)
    result = invoke(str(song), "--anchor", "vocals", "--stems-present", "bass,drums,vocals", "--model", str(scripted), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["input"]["mode"] == "mix" and doc["input"]["stems_present"] == ["bass", "drums", "vocals"]
    assert [(s["start_s"], s["end_s"]) for s in doc["segments"]] == [(0.0, 10.0), (2.0, 12.0)]


def error_of(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("Error: ")
    return lines[-1]


def test_bad_inputs_give_one_line_errors(tmp_path, stems_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    short = tmp_path / "short.wav"
    sf.write(short, noise(0.5, 0.1, 1), RATE_HZ)
    nan = tmp_path / "nan.wav"
    bad = noise(2.0, 0.1, 1)
    bad[5, 0] = np.nan
    sf.write(nan, bad, RATE_HZ, subtype="FLOAT")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEfmt garbage")
    cases = [
        ((str(stems_dir),), "Error: --anchor is required: name the stem whose level is right, one of bass, drums, vocals"),
        ((str(stems_dir), "--anchor", "guitar"), "Error: --anchor: unknown stem 'guitar'; use one of bass, drums, vocals"),
        ((str(empty), "--anchor", "drums"), f"Error: {empty}: no stem audio found"),
        ((str(short), "--anchor", "drums"), f"Error: {short}: 0.50 s of audio is too short to critique (needs at least 1 s)"),
        ((str(nan), "--anchor", "drums"), f"Error: {nan}: contains 1 NaN/Inf samples"),
        ((str(corrupt), "--anchor", "drums"), f"Error: {corrupt}: cannot read audio"),
        ((str(tmp_path / "nope"), "--anchor", "drums"), f"Error: {tmp_path / 'nope'}: no such file or folder"),
    ]
    for args, start in cases:
        assert error_of(invoke(*args)).startswith(start), args


def test_anchor_stem_absent(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    sf.write(folder / "drums.wav", noise(2.0, 0.1, 1), RATE_HZ)
    message = error_of(invoke(str(folder), "--anchor", "vox"))
    assert message == (f"Error: {folder}: anchor stem 'vocals' not found: no file name matches it "
                       "(found: drums <- drums.wav); rename its file or pass --stem vocals=PATH")


@pytest.fixture
def builtin(monkeypatch, tmp_path):
    """No model configured anywhere; the built-in critic is a stand-in measured critic (returned)."""
    critic = StandInMeasured()
    monkeypatch.delenv("MIXCRITIC_MODEL", raising=False)
    monkeypatch.setattr("mixcritic.critique.default_model_dir", lambda: tmp_path / "none")
    monkeypatch.setattr("mixcritic.critics.measured.load_builtin", lambda: critic, raising=False)
    return critic


def test_no_model_means_the_builtin_critic(stems_dir, builtin):
    result = invoke(str(stems_dir), "--anchor", "drums", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, json_schema())
    settings = doc["settings"]
    assert (settings["engine"], settings["model"], settings["critic"], settings["wiring_only"]) == (
        "measured", "builtin", "critic: built-in, stand-in measured critic", False)
    assert [(s["verdict"], s["confidence"], s["probabilities"]) for s in doc["segments"]] == [
        ("too_loud", 0.75, {"no_error": 0.125})] * 3
    assert doc["summary"]["confidence"] == 0.75 and doc["summary"]["stems"][0]["confidence"] == 0.75
    assert doc["summary"]["lines"][0] == "bass too loud in 3 of 3 segments — reduce 6-12 dB (mean confidence 75 %)"
    assert "critic: built-in, stand-in measured critic" in result.stderr
    # the critic was given every stem's window at the file's level, not normalised
    first = builtin.segments[0]
    assert set(first.stems) == {"bass", "drums", "other", "vocals"} and first.anchor_stem == "drums"
    assert all(audio.shape == (240_000,) for audio in first.stems.values())
    assert first.stems_present == ("bass", "drums", "other", "vocals")
    # the stems are the ones heard in the mix, at their gains: their sum, normalised, is the mix
    gain = 10 ** ((-23.0 - doc["segments"][0]["mix_lufs"]) / 20)
    np.testing.assert_allclose(sum(first.stems.values()) * gain, first.mix, rtol=0, atol=2e-4 * np.abs(first.mix).max())


def test_model_builtin_selects_the_builtin_critic_over_the_environment(stems_dir, builtin, monkeypatch, tmp_path):
    monkeypatch.setenv("MIXCRITIC_MODEL", str(tmp_path / "elsewhere"))
    result = invoke(str(stems_dir), "--anchor", "drums", "--model", "builtin", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["model"] == "builtin"
    assert len(builtin.segments) == 3


def test_table_says_which_critic_spoke_and_shows_confidence(stems_dir, builtin):
    result = invoke(str(stems_dir), "--anchor", "drums")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == "critic: built-in, stand-in measured critic"
    assert "confidence" in out and "75 %" in out
    assert "Caveat" not in out


def test_a_measured_critic_refuses_a_single_mixed_file(tmp_path, builtin):
    song = tmp_path / "song.wav"
    sf.write(song, noise(12.0, 0.1, 5), RATE_HZ)
    result = invoke(str(song), "--anchor", "vocals")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {song}: the measured critic needs the separate stems, not one mixed file; "
        "pass a folder of stems, or an LLM run with --model RUN")
    assert builtin.segments == []


def test_a_missing_model_folder_is_a_one_line_error(stems_dir, tmp_path):
    message = error_of(invoke(str(stems_dir), "--anchor", "drums", "--model", str(tmp_path / "gone")))
    assert message == (f"Error: --model {tmp_path / 'gone'}: no such folder; point it at a run written by "
                       "`mixcritic train`, or use `builtin`")


def test_llm_output_has_no_confidence_column(stems_dir, scripted):
    result = invoke(str(stems_dir), "--anchor", "drums", "--model", str(scripted))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"critic: {scripted}, scripted LLM stand-in"
    assert "confidence" not in result.stdout


def test_a_measured_run_folder_is_loaded_by_its_engine(stems_dir, tmp_path, monkeypatch):
    """`--model RUN` reads RUN/model/mixcritic.json's engine; a file without one is an LLM run."""
    measured = StandInMeasured(Label("no_error"), confidence=0.5, no_error=0.5)
    loaded = []
    monkeypatch.setattr("mixcritic.critics.measured.load_measured", lambda folder: loaded.append(folder) or measured,
                        raising=False)
    run = tmp_path / "measured-run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "mixcritic.json").write_text(json.dumps({"engine": "measured"}))
    result = invoke(str(stems_dir), "--anchor", "drums", "--model", str(run), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert loaded == [run / "model"] and doc["settings"]["engine"] == "measured" and doc["settings"]["model"] == str(run)
    assert [s["verdict"] for s in doc["segments"]] == ["balanced"] * 3
    assert doc["summary"]["lines"][0] == "balanced in 3 of 3 segments"
    # base-model overrides mean nothing to a measured critic
    message = error_of(invoke(str(stems_dir), "--anchor", "drums", "--model", str(run), "--llm", "Qwen/Qwen2-7B-Instruct"))
    assert message == f"Error: --llm applies to an LLM run, but {run} is a measured critic (it has no base model); drop --llm"
    # an unknown engine (a newer mixcritic's run) is a one-line error
    (run / "model" / "mixcritic.json").write_text(json.dumps({"engine": "oracle"}))
    message = error_of(invoke(str(stems_dir), "--anchor", "drums", "--model", str(run)))
    assert message.startswith(f"Error: {run / 'model' / 'mixcritic.json'}: unknown engine 'oracle'")
