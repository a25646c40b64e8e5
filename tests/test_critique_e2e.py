"""`mixcritic critique` end to end on a real tiny checkpoint (trained here in a few seconds).

The checkpoint is random-init tiny MERT + Qwen2 trained for a few steps, so its advice is
meaningless; these tests check the wiring, the output formats and determinism, not the advice.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mixcritic.cli import app
from mixcritic.critique import json_schema
from mixcritic.toy import TOY_RATE_HZ, make_toy_song

runner = CliRunner()
SESSION_NAMES = {"bass": "Bass Guitar.wav", "drums": "Drum Kit.wav", "other": "Keys.flac", "vocals": "Lead Vox.wav"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real tiny run (toy stems -> synth -> train --preset tiny, 4 steps), built once for this
    module. The tiny base models go to a cache shared by this test session (see tiny_cache_dir)."""
    import torch

    from mixcritic.demo import train_tiny_run

    torch.set_num_threads(1)
    with tiny_cache_dir(tmp_path_factory):
        yield train_tiny_run(tmp_path_factory.mktemp("work"), seed=2, tracks=3, seconds=20.0, log=lambda m: None, train_steps=4)


@contextmanager
def tiny_cache_dir(tmp_path_factory):
    """Point MIXCRITIC_CACHE_DIR at one folder per test session, so the tiny base models (about
    30 s to build on 2 cores) are built once for the critique and demo tests."""
    previous = os.environ.get("MIXCRITIC_CACHE_DIR")
    os.environ["MIXCRITIC_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "mixcritic-tiny-cache")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MIXCRITIC_CACHE_DIR", None)
        else:
            os.environ["MIXCRITIC_CACHE_DIR"] = previous


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    """A 25 s toy song as a folder of studio-named stems (44.1 kHz stereo)."""
    folder = tmp_path_factory.mktemp("session")
    for stem, audio in make_toy_song(11, 25.0).items():
        sf.write(str(folder / SESSION_NAMES[stem]), audio, TOY_RATE_HZ)
    return folder


def critique_json(*args: str) -> dict:
    result = runner.invoke(app, ["critique", *args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_on_a_tiny_checkpoint(tiny_run, session_dir):
    doc = critique_json(str(session_dir), "--anchor", "drums", "--model", str(tiny_run))
    jsonschema.validate(doc, json_schema())
    assert [(s["start_s"], s["end_s"]) for s in doc["segments"]] == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    assert doc["settings"]["model"] == str(tiny_run) and doc["settings"]["trained_segment_s"] == 10.0
    assert doc["settings"]["device"] == "cpu"
    # which critic spoke, and that a tiny-preset run is only a wiring check
    assert (doc["settings"]["engine"], doc["settings"]["wiring_only"]) == ("llm", True)
    assert doc["settings"]["critic"] == f"critic: {tiny_run}, LLM wiring check (tiny preset: hears the mix, its advice is weak)"
    assert json.loads((tiny_run / "model" / "mixcritic.json").read_text())["run_preset"] == "tiny"
    assert all(s["confidence"] is None and s["probabilities"] is None for s in doc["segments"])
    assert doc["summary"]["confidence"] is None
    assert {Path(f["path"]).name: f["stem"] for f in doc["input"]["files"]} == {
        name: stem for stem, name in SESSION_NAMES.items()}
    for segment in doc["segments"]:
        assert isinstance(segment["text"], str) and segment["verdict"] != "silent"
    assert doc["summary"]["judged"] == 3


def test_answers_are_deterministic_and_independent_of_batch_size(tiny_run, session_dir):
    args = (str(session_dir), "--anchor", "drums", "--model", str(tiny_run))
    batched = critique_json(*args, "--batch-size", "8")
    single = critique_json(*args, "--batch-size", "1")
    assert [s["text"] for s in batched["segments"]] == [s["text"] for s in single["segments"]]
    assert critique_json(*args, "--batch-size", "8")["segments"] == batched["segments"]


def test_table_on_a_tiny_checkpoint(tiny_run, session_dir):
    result = runner.invoke(app, ["critique", str(session_dir), "--anchor", "drums", "--model", str(tiny_run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "mixcritic — " in out and "anchor: drums" in out
    for time_range in ("0:00.0–0:10.0", "0:10.0–0:20.0", "0:15.0–0:25.0"):
        assert time_range in out
    assert "Summary" in out
    assert out.splitlines()[0].startswith(f"critic: {tiny_run}, LLM wiring check")
    assert "Caveat: this run was trained with the tiny preset to check the wiring: it has heard only toy songs (34-63 %" in out
    assert not out.lstrip().startswith("{")
    assert "Loading the model from" in result.stderr


def test_single_file_and_segment_override_on_a_tiny_checkpoint(tiny_run, tmp_path):
    song = tmp_path / "mix.wav"
    stems = make_toy_song(12, 12.0)
    sf.write(str(song), sum(stems.values()), TOY_RATE_HZ, subtype="PCM_24")
    doc = critique_json(str(song), "--anchor", "vocals", "--model", str(tiny_run), "--segment-s", "5")
    jsonschema.validate(doc, json_schema())
    assert doc["input"]["mode"] == "mix"
    assert [(s["start_s"], s["end_s"]) for s in doc["segments"]] == [(0.0, 5.0), (5.0, 10.0), (7.0, 12.0)]
    assert doc["settings"]["segment_s"] == 5.0


def test_model_from_environment(tiny_run, session_dir, monkeypatch):
    monkeypatch.setenv("MIXCRITIC_MODEL", str(tiny_run))
    doc = critique_json(str(session_dir), "--anchor", "bass")
    assert doc["settings"]["model"] == str(tiny_run)


def test_encoder_and_llm_overrides_replace_the_checkpoints_sources(tiny_run, session_dir, tmp_path):
    """A run whose base-model folders moved works again with --encoder/--llm pointing at them,
    and gives exactly the answers of the original run."""
    import shutil

    original = json.loads((tiny_run / "model" / "mixcritic.json").read_text())
    moved = tmp_path / "moved-run"
    shutil.copytree(tiny_run / "model", moved)
    # as a real (non-tiny) run: no tiny spec to rebuild the base from, sources that no longer exist
    broken = original | {"encoder_source": str(tmp_path / "gone" / "mert"), "llm_source": str(tmp_path / "gone" / "qwen2"),
                         "tiny_spec": None}
    (moved / "mixcritic.json").write_text(json.dumps(broken))
    args = ["critique", str(session_dir), "--anchor", "drums", "--device", "cpu", "--json", "--model", str(moved)]
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1 and "gone" in failed.output and "Traceback" not in failed.output
    fixed = critique_json(str(session_dir), "--anchor", "drums", "--model", str(moved),
                          "--encoder", original["encoder_source"], "--llm", original["llm_source"])
    reference = critique_json(str(session_dir), "--anchor", "drums", "--model", str(tiny_run))
    assert [s["text"] for s in fixed["segments"]] == [s["text"] for s in reference["segments"]]
