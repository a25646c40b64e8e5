"""Segmentation, normalisation, batching, summary and JSON of `critique`, with a scripted critic.

The end-to-end tests on a real tiny checkpoint live in tests/test_critique_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest

from mixcritic.audio import loudness_lufs
from mixcritic.critics import Judgement, Segment
from mixcritic.critique import (
    CritiqueConfig,
    SegmentResult,
    correction_words,
    critique_session,
    json_schema,
    resolve_model,
    run_critique,
    segment_starts,
    summarise,
)
from mixcritic.errors import ModelError
from mixcritic.labels import Label
from mixcritic.session import Session, SessionFile
from mixcritic.templates import parse_response, render_instruction, render_response

RATE_HZ = 24_000
SETTINGS = {"sample_rate_hz": RATE_HZ, "segment_s": 10.0, "target_lufs": -23.0, "template_version": None}


class ScriptedCritic:
    """A Critic double (an LLM-like engine): answers from a list in order and records what it was given."""

    engine = "llm"
    needs_stems = False

    def __init__(self, answers: list[str] | None = None, settings: dict | None = None) -> None:
        self.answers = list(answers or [])
        self.settings = dict(SETTINGS if settings is None else settings)
        self.calls: list[tuple[np.ndarray, list[str]]] = []
        self.segments: list[Segment] = []

    def describe(self) -> str:
        return "scripted"

    def judge(self, segments: list[Segment]) -> list[Judgement]:
        self.segments.extend(segments)
        self.calls.append((np.stack([s.mix for s in segments]), [s.instruction for s in segments]))
        out = []
        for _ in segments:
            text = self.answers.pop(0) if self.answers else render_response(Label("no_error"), 0)
            out.append(Judgement(parse_response(text), text))
        return out


def noise(seconds: float, amp: float, seed: int) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * RATE_HZ)))).astype(np.float32)


def stems_session(seconds: float, silent_s: tuple[float, float] | None = None, anchor_gap_s=None) -> Session:
    audio = {"bass": noise(seconds, 0.05, 1), "drums": noise(seconds, 0.1, 2), "vocals": noise(seconds, 0.03, 3)}
    for stem, gap in (("all", silent_s), ("drums", anchor_gap_s)):
        if gap is not None:
            a, b = (int(round(t * RATE_HZ)) for t in gap)
            for name in audio if stem == "all" else [stem]:
                audio[name][a:b] = 0.0
    files = [SessionFile(Path(f"s/{stem}.wav"), stem, "name", seconds, RATE_HZ, 1) for stem in audio]
    return Session("stems", Path("s"), "drums", tuple(audio), audio, RATE_HZ, files)


CONFIG = CritiqueConfig(segment_s=10.0, batch_size=8)


@pytest.mark.parametrize(
    "seconds, windows",
    [(10.0, [(0.0, 10.0)]), (25.0, [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]), (3.0, [(0.0, 3.0)])],
)
def test_windows_cover_the_song_with_full_length_segments(seconds, windows):
    session = stems_session(seconds)
    critic = ScriptedCritic()
    results = critique_session(session, critic, CONFIG)
    assert [(r.start_s, r.end_s) for r in results] == windows
    sent = critic.calls[0][0]
    # every window the model hears has exactly the trained length and the trained loudness
    assert sent.shape == (len(windows), 10 * RATE_HZ) and sent.dtype == np.float32
    real = int(min(seconds, 10.0) * RATE_HZ)
    for audio in sent:
        assert loudness_lufs(audio[:real], RATE_HZ) == pytest.approx(-23.0, abs=0.05)
    assert [r.padded_s for r in results] == [pytest.approx(max(0.0, 10.0 - seconds))] * len(windows)


def test_segment_starts_align_the_last_window_to_the_end():
    assert segment_starts(25, 10) == [0, 10, 15]
    assert segment_starts(30, 10) == [0, 10, 20]
    assert segment_starts(10, 10) == [0]
    assert segment_starts(4, 10) == [0]


def test_short_song_is_padded_after_normalising_the_real_audio():
    session = stems_session(3.0)
    critic = ScriptedCritic()
    critique_session(session, critic, CONFIG)
    sent = critic.calls[0][0][0]
    assert not np.any(sent[3 * RATE_HZ :])
    assert loudness_lufs(sent[: 3 * RATE_HZ], RATE_HZ) == pytest.approx(-23.0, abs=0.05)


def test_instruction_is_the_training_template():
    session = stems_session(10.0)
    critic = ScriptedCritic()
    critique_session(session, critic, CONFIG)
    assert critic.calls[0][1] == [render_instruction(0, 10.0, ["bass", "drums", "vocals"], "drums")]


def test_windows_the_training_gate_drops_are_reported_not_sent():
    # 10-20 s: everything silent; 20-30 s: the anchor (drums) is silent; 30-40 s: only drums play
    session = stems_session(50.0, silent_s=(10.0, 20.0), anchor_gap_s=(20.0, 30.0))
    for stem in ("bass", "vocals"):
        session.audio[stem][30 * RATE_HZ : 40 * RATE_HZ] = 0.0
    critic = ScriptedCritic([render_response(Label.for_flaw("loud", "bass"), 3)] * 2)
    results = critique_session(session, critic, CONFIG)
    assert [r.verdict for r in results] == ["too_loud", "silent", "anchor_inactive", "no_target", "too_loud"]
    assert sum(len(i) for _, i in critic.calls) == 2
    # the K-weighting filter runs over the whole song (as in synth), so a silent window right after
    # loud audio measures the filter's decaying tail: far below the gate, not -inf
    assert results[1].text is None and results[1].mix_lufs < -50.0
    assert results[2].mix_lufs > -30.0 and results[2].text is None
    summary = summarise(results)
    assert (summary.silent, summary.anchor_inactive, summary.no_target, summary.judged) == (1, 1, 1, 2)


def test_a_quiet_but_not_silent_window_below_the_gate_is_silent():
    session = stems_session(20.0)
    for audio in session.audio.values():
        audio[10 * RATE_HZ :] *= np.float32(10 ** (-40 / 20))  # about -60 LUFS
    results = critique_session(session, ScriptedCritic(), CONFIG)
    assert [r.verdict for r in results] == ["balanced", "silent"]
    assert results[1].mix_lufs == pytest.approx(loudness_lufs(session.mix(10 * RATE_HZ, 20 * RATE_HZ), RATE_HZ), abs=0.05)


def test_instruction_lists_only_the_stems_playing_in_the_window():
    session = stems_session(20.0)
    session.audio["vocals"][10 * RATE_HZ :] = 0.0
    critic = ScriptedCritic()
    critique_session(session, critic, CONFIG)
    assert critic.calls[0][1] == [
        render_instruction(0, 10.0, ["bass", "drums", "vocals"], "drums"),
        render_instruction(0, 10.0, ["bass", "drums"], "drums"),
    ]


def test_batches_give_the_same_answers_as_one_at_a_time():
    session = stems_session(50.0)
    answers = [render_response(Label.for_flaw(c, s), 1) for c, s in
               [("loud", "bass"), ("quiet", "vocals"), ("no_error", None), ("very_loud", "bass"), ("loud", "bass")]]
    one = ScriptedCritic(answers)
    two = ScriptedCritic(answers)
    r1 = critique_session(session, one, CritiqueConfig(batch_size=1))
    r2 = critique_session(session, two, CritiqueConfig(batch_size=2))
    assert [len(i) for _, i in one.calls] == [1, 1, 1, 1, 1]
    assert [len(i) for _, i in two.calls] == [2, 2, 1]
    assert r1 == r2
    assert np.array_equal(np.concatenate([a for a, _ in one.calls]), np.concatenate([a for a, _ in two.calls]))


def test_answers_are_parsed_and_unparseable_ones_kept_raw():
    session = stems_session(30.0)
    critic = ScriptedCritic([render_response(Label.for_flaw("very_quiet", "vocals"), 2), "I like this song.",
                             render_response(Label("no_error"), 4)])
    results = critique_session(session, critic, CONFIG)
    first = results[0]
    assert (first.start_s, first.end_s, first.verdict, first.stem, first.category, first.correction_db) == (
        0.0, 10.0, "too_quiet", "vocals", "very_quiet", (6, 12))
    assert parse_response(results[0].text) == Label.for_flaw("very_quiet", "vocals")
    assert (results[1].verdict, results[1].text, results[1].stem, results[1].correction_db) == ("unparsed", "I like this song.", None, None)
    assert (results[2].verdict, results[2].category) == ("balanced", "no_error")


def r(index: int, verdict: str, stem=None, category=None) -> SegmentResult:
    label = Label.for_flaw(category, stem) if category else None
    return SegmentResult(index, index * 10.0, index * 10.0 + 10, verdict, stem, category,
                         label.correction_db if label else None, "x")


def test_summary_consensus_per_stem():
    results = [r(0, "too_loud", "bass", "loud"), r(1, "too_loud", "bass", "very_loud"), r(2, "too_loud", "bass", "loud"),
               r(3, "balanced", category="no_error"), r(4, "too_quiet", "vocals", "quiet"), r(5, "unparsed"),
               SegmentResult(6, 60, 70, "silent")]
    summary = summarise(results)
    assert (summary.segments, summary.judged, summary.balanced, summary.silent, summary.unparsed) == (7, 6, 1, 1, 1)
    assert summary.lines == (
        "bass too loud in 3 of 6 segments — reduce 3-6 dB",
        "vocals too quiet in 1 of 6 segments — raise 3-6 dB",
        "balanced in 1 of 6 segments",
        "1 silent segment(s) skipped",
        "1 answer(s) could not be parsed (shown raw)",
    )


def test_summary_flags_advice_about_the_anchor():
    summary = summarise([r(0, "too_loud", "drums", "loud"), r(1, "balanced", category="no_error")], "drums")
    assert summary.lines[-1] == ("note: 1 answer(s) name the anchor (drums), whose level is taken as right; "
                                 "the model was never trained to do that, so do not trust them")
    assert not any(line.startswith("note") for line in summarise([r(0, "too_loud", "bass", "loud")], "drums").lines)


def test_summary_tie_goes_to_the_milder_correction():
    summary = summarise([r(0, "too_loud", "bass", "very_loud"), r(1, "too_loud", "bass", "loud")])
    assert summary.stems[0].category == "loud" and summary.stems[0].correction_db == (-6, -3)


def test_correction_words():
    assert correction_words((-12, -6)) == "reduce 6-12 dB"
    assert correction_words((3, 6)) == "raise 3-6 dB"


def test_json_document_validates_against_the_schema():
    session = stems_session(30.0, silent_s=(10.0, 20.0))
    critic = ScriptedCritic([render_response(Label.for_flaw("loud", "bass"), 0), "??"])
    report = run_critique(session, critic, CONFIG, Path("run"), "cpu")
    doc = report.to_json()
    jsonschema.validate(doc, json_schema())
    assert [s["verdict"] for s in doc["segments"]] == ["too_loud", "silent", "unparsed"]
    assert doc["segments"][0]["correction_db"] == [-6, -3]
    assert doc["summary"]["unparsed_answers"] == [{"index": 2, "start_s": 20.0, "end_s": 30.0, "text": "??"}]
    doc["segments"][0]["verdict"] = "loud"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json_schema())


def test_session_at_another_rate_is_resampled_for_the_model():
    session = stems_session(10.0)
    critic = ScriptedCritic(settings={**SETTINGS, "sample_rate_hz": 16_000})
    report = run_critique(session, critic, CritiqueConfig.from_settings(critic.settings))
    assert critic.calls[0][0].shape == (1, 160_000)
    assert report.settings["sample_rate_hz"] == 16_000


def test_config_from_checkpoint_settings_and_override():
    config = CritiqueConfig.from_settings({"segment_s": 5, "target_lufs": -20, "sample_rate_hz": RATE_HZ}, None, 3)
    assert (config.segment_s, config.target_lufs, config.batch_size, config.segment_samples) == (5.0, -20.0, 3, 120_000)
    assert CritiqueConfig.from_settings({"segment_s": 5}, 8.0).segment_s == 8.0


def test_model_location_precedence(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    assert resolve_model(run, {}) == run
    assert resolve_model(str(run), {"MIXCRITIC_MODEL": "builtin"}) == run
    assert resolve_model(None, {"MIXCRITIC_MODEL": str(run)}) == run
    assert resolve_model("builtin", {"MIXCRITIC_MODEL": str(run)}) == "builtin"
    assert resolve_model(None, {"MIXCRITIC_MODEL": "builtin"}) == "builtin"
    monkeypatch.setattr("mixcritic.critique.default_model_dir", lambda: tmp_path / "nothing")
    assert resolve_model(None, {}) == "builtin"  # nothing configured: the built-in critic
    with pytest.raises(ModelError, match=r"--model .*missing: no such folder; .* or use `builtin`"):
        resolve_model(tmp_path / "missing", {})
    with pytest.raises(ModelError, match=r"\$MIXCRITIC_MODEL .*missing: no such folder"):
        resolve_model(None, {"MIXCRITIC_MODEL": str(tmp_path / "missing")})
    monkeypatch.setattr("mixcritic.critique.default_model_dir", lambda: run)
    assert resolve_model(None, {}) == run


def test_windows_are_rendered_and_gated_exactly_like_training_samples(tmp_path):
    """A session built from a synth dataset's stem cache, with a record's gain applied, gives the
    model the same normalised audio and the same stems-present as that training sample."""
    from mixcritic.audio import db_to_amplitude
    from mixcritic.dataset import open_dataset
    from mixcritic.labels import STEMS
    from mixcritic.synthesis import SynthConfig, synthesize
    from mixcritic.toy import write_toy_tree

    write_toy_tree(tmp_path / "toy", 2, 20.0, 3)
    synthesize(tmp_path / "toy", tmp_path / "data", SynthConfig(seed=0, valid_fraction=0.0), show_progress=False)
    data = open_dataset(tmp_path / "data")
    record = next(r for r in data.records("train") if r["chunk_index"] == 1 and r["category"] == "very_loud")
    cached = data.stems(record["track_key"])
    audio = {
        stem: np.array(cached[i]) * np.float32(db_to_amplitude(record["gain_db"]) if stem == record["target_stem"] else 1.0)
        for i, stem in enumerate(STEMS)
    }
    session = Session("stems", None, record["anchor_stem"], STEMS, audio, RATE_HZ)
    critic = ScriptedCritic()
    critique_session(session, critic, CONFIG)
    sent_audio, sent_instructions = critic.calls[0]
    assert sent_audio.shape == (2, 10 * RATE_HZ)
    np.testing.assert_allclose(sent_audio[1], data.render(record, normalize=True), rtol=0, atol=2e-5)
    assert sent_instructions[1] == render_instruction(0, 10.0, record["stems_present"], record["anchor_stem"])
