"""`mixcritic demo`: the injected flaw is exact, and the whole demo runs (with 2 training steps).

The full demo trains the tiny preset for 60 steps (about 1-2.5 minutes on 2 shared cores), too
slow for the suite; here every stage runs for real except that training stops after 2 steps.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import mixcritic.demo as demo
from mixcritic.cli import app
from mixcritic.errors import MixcriticError
from mixcritic.session import open_session
from mixcritic.toy import write_toy_tree


def test_flawed_session_applies_the_exact_gain_and_studio_names(tmp_path):
    track = write_toy_tree(tmp_path / "toy", 1, 2.0, 5)[0]
    session_dir = demo.write_flawed_session(track, tmp_path / "session", "bass", 9.0)
    assert sorted(p.name for p in session_dir.iterdir()) == sorted(demo.SESSION_FILE_NAMES.values())
    for stem, name in demo.SESSION_FILE_NAMES.items():
        original, _ = sf.read(track / f"{stem}.wav", dtype="float32")
        flawed, rate_hz = sf.read(session_dir / name, dtype="float32")
        assert rate_hz == 44_100
        factor = 10 ** (9.0 / 20.0) if stem == "bass" else 1.0  # +9 dB = x2.818
        np.testing.assert_allclose(flawed, original * np.float32(factor), rtol=1e-6, atol=0)
    session = open_session(session_dir, "drums")
    assert {f.path.name: f.stem for f in session.files} == {v: k for k, v in demo.SESSION_FILE_NAMES.items()}


@pytest.mark.parametrize(
    "gain_db, category",
    [(9.0, "very_loud"), (4.0, "loud"), (3.0, "no_error"), (-4.5, "quiet"), (-12.0, "very_quiet")],
)
def test_flaw_category(gain_db, category):
    assert demo.flaw_category(gain_db) == category


def test_demo_config_is_validated(tmp_path):
    with pytest.raises(MixcriticError, match="two different stems"):
        demo.DemoConfig(tmp_path, flaw_stem="drums", anchor_stem="drums")
    with pytest.raises(MixcriticError, match="at least 2"):
        demo.DemoConfig(tmp_path, tracks=1)
    with pytest.raises(MixcriticError, match="outside the flaw ranges"):
        demo.flaw_category(15.0)


def test_demo_keeps_the_tiny_base_models_in_its_work_dir_unless_told(tmp_path, monkeypatch):
    monkeypatch.delenv("MIXCRITIC_CACHE_DIR", raising=False)
    with demo._cache_in(tmp_path / "cache"):
        assert os.environ["MIXCRITIC_CACHE_DIR"] == str(tmp_path / "cache")
    assert "MIXCRITIC_CACHE_DIR" not in os.environ
    monkeypatch.setenv("MIXCRITIC_CACHE_DIR", "/elsewhere")
    with demo._cache_in(tmp_path / "cache"):
        assert os.environ["MIXCRITIC_CACHE_DIR"] == "/elsewhere"


def test_demo_command_end_to_end_with_two_training_steps(tmp_path, tmp_path_factory, monkeypatch):
    import torch

    torch.set_num_threads(1)
    real_train = demo._train
    monkeypatch.setattr(demo, "_train", lambda data, out, seed, steps=None: real_train(data, out, seed, 2))
    # share the tiny base models with tests/test_critique_e2e.py (built once per test session)
    monkeypatch.setenv("MIXCRITIC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mixcritic-tiny-cache"))
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "work"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    out, err = result.stdout, result.stderr
    assert "Injected  bass +9 dB (very loud) against drums" in out
    assert "Expected  bass: reduce 6-12 dB" in out
    assert "Model said " in out and "not a trained critic" in out and "10-13 % with the audio muted" in out
    assert any(f"Agreement {words}" in out for words in ("yes", "no", "stem and direction (not the range)"))
    assert "0:00.0–0:10.0" in out and "0:14.0–0:24.0" in out
    for stage in ("[1/6] toy stems", "[2/6] flawed session", "[3/6] built-in critic", "[4/6] synth", "[5/6] train",
                  "[6/6] critique"):
        assert stage in err
    # first the built-in critic, which finds the 9 dB flaw on the toy song; then the learned path
    first, second = out.index("1. The built-in critic"), out.index("2. The learned path")
    assert first < second
    builtin_part = out[first:second]
    assert "critic: built-in, measured stem loudness" in builtin_part
    assert "Built-in said bass too loud in" in builtin_part and "Agreement no" not in builtin_part
    assert "bass    <- Bass Guitar.wav (name)" in err
    work = tmp_path / "work"
    assert (work / "run" / "model" / "COMPLETE").is_file() and (work / "data" / "dataset.json").is_file()


def _report(*verdicts):
    from mixcritic.critique import SegmentResult, summarise
    from mixcritic.labels import Label

    class Report:
        pass

    report = Report()
    results = []
    for i, (verdict, stem, category) in enumerate(verdicts):
        label = Label.for_flaw(category, stem) if category else None
        results.append(SegmentResult(i, 10.0 * i, 10.0 * i + 10, verdict, stem, category,
                                     label.correction_db if label else None, "x"))
    report.summary = summarise(results)
    return report


def test_model_agrees_needs_stem_direction_and_range_in_most_segments():
    loud = ("too_loud", "bass", "very_loud")
    assert demo.model_agrees(_report(loud, loud, ("balanced", None, "no_error")), "bass", "very_loud")
    assert not demo.model_agrees(_report(loud, ("balanced", None, "no_error"), ("unparsed", None, None)), "bass", "very_loud")
    assert not demo.model_agrees(_report(("too_loud", "drums", "very_loud")), "bass", "very_loud")
    assert not demo.model_agrees(_report(("too_loud", "bass", "loud")), "bass", "very_loud")


def test_agreement_is_not_no_for_the_right_stem_and_direction_with_another_severity():
    """The demo printed "Agreement no" whenever the severity differed (and so almost always): a +9 dB
    bass called "bass too loud" (3-6 dB) is the right stem and direction, the paper's "Both"."""
    mild = ("too_loud", "bass", "loud")
    assert demo.agreement_words(_report(mild, mild, ("too_loud", "bass", "very_loud")), "bass", "very_loud") == (
        "stem and direction (not the range)")
    assert demo.agreement_words(_report(("too_loud", "bass", "very_loud")), "bass", "very_loud") == "yes"
    assert demo.agreement_words(_report(("too_quiet", "bass", "very_quiet")), "bass", "very_loud") == "no"
