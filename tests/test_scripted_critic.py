"""Each clip reaches the critic with its own instruction, in batches and one by one, across resume.

The scripted critic (tests/scripted_critic.py) answers a hash of the exact clip and instruction it
receives; the tests recompute that answer from each record (its ``Dataset.render`` clip, shifted to
the critic's loudness target, and its ``instruction``). A clip paired with another record's
instruction, two clips swapped inside a batch, a clip rendered at the wrong level or a record
answered twice after a resume would each change an answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scripted_critic import ScriptedCritic, anchor_named, by_clip_and_instruction, dominant_hz, hashed_answer
from typer.testing import CliRunner

from mixcritic import audio
from mixcritic import evaluate as ev
from mixcritic.cli import app
from mixcritic.dataset import open_dataset
from mixcritic.labels import TARGET_STEMS, Label
from mixcritic.templates import render_response

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from mixcritic.toy import write_toy_tree

    root = tmp_path_factory.mktemp("scripted")
    write_toy_tree(root / "stems", tracks=4, seconds=8.0, seed=11)
    out = root / "data"
    result = runner.invoke(app, ["synth", str(root / "stems"), "--out", str(out), "--segment-s", "4", "--seed", "0",
                                 "--valid-fraction", "0"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def use_critic(monkeypatch, tmp_path):
    """Install a ScriptedCritic behind `load_critic`; returns (install(critic), run_dir)."""
    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "mixcritic.json").write_text('{"engine": "llm", "scripted": true}')
    (run_dir / "model" / "COMPLETE").write_text("")
    (run_dir / "model" / "trained.safetensors").write_bytes(b"scripted: no tensors")

    def install(critic):
        monkeypatch.setattr("mixcritic.critics.load_critic", lambda *a, **k: critic)
        return critic

    return install, run_dir


def expected_answers(data_dir: Path, ids: list[str], target_lufs: float = -23.0) -> dict[str, str]:
    """What the scripted critic must say for each record, recomputed from the record alone."""
    dataset = open_dataset(data_dir)
    records = {r["id"]: r for r in dataset.records("test")}
    shift_db = target_lufs - dataset.info["options"]["target_lufs"]
    out = {}
    for sample_id in ids:
        clip = dataset.render(records[sample_id], normalize=True)
        if shift_db:
            clip = audio.apply_gain_db(clip, shift_db)
        out[sample_id] = hashed_answer(clip, records[sample_id]["instruction"])
    return out


def predictions(folder: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len({line["id"] for line in lines}) == len(lines), "a record was answered twice"
    return {line["id"]: line["response"] for line in lines}


def evaluate(data_dir: Path, run_dir: Path, out: Path, batch_size: int, limit: int = 30) -> dict:
    return ev.evaluate(ev.EvaluateConfig(data_dir=data_dir, model_dir=run_dir, out_dir=out, batch_size=batch_size,
                                         limit=limit, device="cpu"))


def test_each_record_reaches_the_critic_batched_and_one_by_one(data, use_critic, tmp_path):
    install, run_dir = use_critic
    batched = install(ScriptedCritic(by_clip_and_instruction))
    report = evaluate(data, run_dir, tmp_path / "batched", batch_size=7)
    assert batched.batches == [7, 7, 7, 7, 2]
    got = predictions(tmp_path / "batched")
    assert len(got) == 30
    assert got == expected_answers(data, list(got))
    # the answers differ from record to record: a mix-up could not go unnoticed
    assert len(set(got.values())) >= 20

    single = install(ScriptedCritic(by_clip_and_instruction))
    again = evaluate(data, run_dir, tmp_path / "single", batch_size=1)
    assert single.batches == [1] * 30
    assert predictions(tmp_path / "single") == got
    assert again["metrics"] == report["metrics"]
    # what the critic was handed: the record's normalised clip, instruction, anchor and stems present
    dataset = open_dataset(data)
    records = {r["id"]: r for r in dataset.records("test")}
    order = [json.loads(line)["id"] for line in (tmp_path / "single" / "predictions.jsonl").read_text().splitlines()]
    assert len(single.segments) == len(order) == 30
    for sample_id, segment in zip(order, single.segments):
        record = records[sample_id]
        np.testing.assert_array_equal(segment.mix, dataset.render(record, normalize=True))
        assert segment.instruction == record["instruction"]
        assert segment.anchor_stem == record["anchor_stem"] == anchor_named(segment.instruction)
        assert segment.stems_present == tuple(record["stems_present"])
        assert audio.loudness_lufs(segment.mix, 24_000) == pytest.approx(-23.0, abs=0.02)


def test_the_metrics_score_what_the_critic_said(data, use_critic, tmp_path):
    from mixcritic.templates import parse_response

    install, run_dir = use_critic
    install(ScriptedCritic(by_clip_and_instruction))
    report = evaluate(data, run_dir, tmp_path / "m", batch_size=5)
    records = {r["id"]: r for r in open_dataset(data).records("test")}
    both = sum(
        (lambda label, r: (label.category == "no_error") if r["category"] == "no_error"
         else (label.category != "no_error" and label.stem == r["target_stem"] and label.direction == Label.for_flaw(r["category"], r["target_stem"]).direction))
        (parse_response(text), records[sample_id])
        for sample_id, text in predictions(tmp_path / "m").items()
    )
    rows = report["metrics"]["by_category"]["rows"]
    assert sum(row["correct"]["both"] for row in rows.values()) == both


def test_resume_answers_each_remaining_record_once_with_its_own_clip(data, use_critic, tmp_path):
    install, run_dir = use_critic
    out = tmp_path / "resumed"
    install(ScriptedCritic(by_clip_and_instruction, fail_on_call=3))
    with pytest.raises(KeyboardInterrupt):
        evaluate(data, run_dir, out, batch_size=4)
    assert len(predictions(out)) == 8  # two batches were written before the interruption
    second = install(ScriptedCritic(by_clip_and_instruction))
    evaluate(data, run_dir, out, batch_size=4)
    assert sum(second.batches) == 30 - 8 and second.batches == [4, 4, 4, 4, 4, 2]
    got = predictions(out)
    assert len(got) == 30 and got == expected_answers(data, list(got))
    whole = install(ScriptedCritic(by_clip_and_instruction))
    evaluate(data, run_dir, tmp_path / "whole", batch_size=4)
    assert (out / "report.json").read_text() == (tmp_path / "whole" / "report.json").read_text()
    assert sum(whole.batches) == 30


def test_a_run_with_another_loudness_target_hears_clips_at_its_level(data, use_critic, tmp_path):
    install, run_dir = use_critic
    critic = install(ScriptedCritic(by_clip_and_instruction, settings={"target_lufs": -18.0}))
    report = evaluate(data, run_dir, tmp_path / "shifted", batch_size=8, limit=10)
    assert report["predictor"]["level_shift_db"] == pytest.approx(5.0)
    got = predictions(tmp_path / "shifted")
    assert got == expected_answers(data, list(got), target_lufs=-18.0)
    assert got != expected_answers(data, list(got), target_lufs=-23.0)
    for segment in critic.segments:
        assert audio.loudness_lufs(segment.mix, 24_000) == pytest.approx(-18.0, abs=0.02)


# ---------------------------------------------------------------------------------------------
# critique: every window reaches the critic in order, batched and one by one

RATE_HZ = 44_100
WINDOW_HZ = [300.0, 500.0, 700.0, 900.0]  # the pad's pitch in each 5 s window
LABELS = [Label.for_flaw(category, "bass") for category in ("quiet", "loud", "very_quiet", "very_loud")]


def answer_from_pitch_and_anchor(segment) -> str:
    """The window's pitch picks the category, the instruction's anchor picks the stem (the one after it)."""
    index = int(np.argmin([abs(dominant_hz(segment.mix) - hz) for hz in WINDOW_HZ]))
    anchor = anchor_named(segment.instruction)
    stem = TARGET_STEMS[(TARGET_STEMS.index(anchor) + 1) % 3]
    return render_response(Label.for_flaw(LABELS[index].category, stem), index)


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("session")
    t = np.arange(20 * RATE_HZ) / RATE_HZ
    pitch = np.repeat(WINDOW_HZ, 5 * RATE_HZ)
    pad = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / RATE_HZ)
    rng = np.random.default_rng(0)
    sf.write(folder / "Keys.wav", pad.astype(np.float32), RATE_HZ)
    sf.write(folder / "Drums.wav", (0.08 * rng.standard_normal(t.size)).astype(np.float32), RATE_HZ)
    sf.write(folder / "Bass.wav", (0.15 * np.sin(2 * np.pi * 55 * t)).astype(np.float32), RATE_HZ)
    sf.write(folder / "Vocals.wav", (0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32), RATE_HZ)
    return folder


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("anchor", ["drums", "vocals"])
def test_critique_windows_reach_the_critic_in_order(session_dir, use_critic, batch_size, anchor):
    install, run_dir = use_critic
    critic = install(ScriptedCritic(answer_from_pitch_and_anchor, settings={"segment_s": 5.0}))
    result = runner.invoke(app, ["critique", str(session_dir), "--anchor", anchor, "--model", str(run_dir),
                                 "--batch-size", str(batch_size), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert critic.batches == ([1, 1, 1, 1] if batch_size == 1 else [3, 1])
    stem = TARGET_STEMS[(TARGET_STEMS.index(anchor) + 1) % 3]
    got = [(s["start_s"], s["end_s"], s["category"], s["stem"]) for s in doc["segments"]]
    assert got == [(5.0 * i, 5.0 * i + 5.0, LABELS[i].category, stem) for i in range(4)]
    for segment in critic.segments:
        assert segment.anchor_stem == anchor and anchor_named(segment.instruction) == anchor
        assert audio.loudness_lufs(segment.mix, 24_000) == pytest.approx(-23.0, abs=0.05)


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.replace("\n ", " ").splitlines() if line.startswith("Warning:")]


def test_segment_s_differing_from_training_is_warned_and_used(session_dir, use_critic):
    install, run_dir = use_critic
    critic = install(ScriptedCritic(answer_from_pitch_and_anchor, settings={"segment_s": 5.0}))
    args = ["critique", str(session_dir), "--anchor", "drums", "--model", str(run_dir), "--json"]
    result = runner.invoke(app, [*args, "--segment-s", "10"])
    assert result.exit_code == 0, result.output
    assert "Warning: --segment-s 10 differs from the 5 s segments the model was trained on" in warnings_of(result)
    doc = json.loads(result.stdout)
    assert [(s["start_s"], s["end_s"]) for s in doc["segments"]] == [(0.0, 10.0), (10.0, 20.0)]
    assert [len(s.mix) for s in critic.segments] == [240_000, 240_000]
    assert all(re.search(r"\b10\b", s.instruction) and not re.search(r"\b5\b", s.instruction) for s in critic.segments)
    # the same length as trained: no warning
    same = runner.invoke(app, [*args, "--segment-s", "5"])
    assert same.exit_code == 0 and not any("--segment-s" in w for w in warnings_of(same))


def test_a_song_shorter_than_one_segment_is_warned_and_padded(tmp_path, use_critic):
    install, run_dir = use_critic
    critic = install(ScriptedCritic(answer_from_pitch_and_anchor, settings={"segment_s": 5.0}))
    folder = tmp_path / "short"
    folder.mkdir()
    t = np.arange(int(3.0 * RATE_HZ)) / RATE_HZ
    sf.write(folder / "Keys.wav", (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), RATE_HZ)
    sf.write(folder / "Drums.wav", (0.08 * np.random.default_rng(1).standard_normal(t.size)).astype(np.float32), RATE_HZ)
    sf.write(folder / "Bass.wav", (0.15 * np.sin(2 * np.pi * 55 * t)).astype(np.float32), RATE_HZ)
    sf.write(folder / "Vocals.wav", (0.1 * np.sin(2 * np.pi * 1500 * t)).astype(np.float32), RATE_HZ)
    result = runner.invoke(app, ["critique", str(folder), "--anchor", "drums", "--model", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert ("Warning: the song is 3.00 s, shorter than one 5 s segment; it is padded with silence to the segment length"
            in warnings_of(result))
    doc = json.loads(result.stdout)
    assert [(s["start_s"], s["end_s"], s["category"]) for s in doc["segments"]] == [(0.0, 3.0, "loud")], doc["segments"]
    (segment,) = critic.segments
    assert len(segment.mix) == 120_000 and not np.any(segment.mix[72_000 + 240 :])  # 2 s of silence after 3 s
    assert audio.loudness_lufs(segment.mix[:72_000], 24_000) == pytest.approx(-23.0, abs=0.05)


# ---------------------------------------------------------------------------------------------
# demo: "Agreement" says whether the critic found the injected flaw (bass +9 dB against the drums)


def run_demo_with(monkeypatch, tmp_path, answer) -> str:
    import mixcritic.demo as demo

    run_dir = tmp_path / "work" / "run"
    monkeypatch.setattr(demo, "_synth", lambda stems_root, out_dir, seed: out_dir)  # no dataset needed:
    monkeypatch.setattr(demo, "_train", lambda data, out, seed, steps=None: run_dir)  # the critic is scripted
    critic = ScriptedCritic(lambda segment: answer, settings={"segment_s": 10.0})
    monkeypatch.setattr("mixcritic.critique.load_model", lambda *a, **k: critic)
    result = runner.invoke(app, ["demo", "--workdir", str(tmp_path / "work"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert critic.segments, "the scripted critic judged nothing"
    assert all(s.anchor_stem == "drums" for s in critic.segments)
    return result.stdout


def test_demo_agreement_is_yes_when_the_critic_finds_the_injected_flaw(monkeypatch, tmp_path):
    out = run_demo_with(monkeypatch, tmp_path, "The bass is far too loud. Reduce the bass by 6 to 12 dB.")
    assert "Injected  bass +9 dB (very loud) against drums" in out
    assert "Agreement yes" in out and "Agreement no" not in out


def test_demo_agreement_credits_the_right_stem_and_direction_at_another_severity(monkeypatch, tmp_path):
    # issue 13: this printed "Agreement no". A +9 dB bass called "a bit too loud, reduce 3-6 dB" is the
    # right stem and direction (the paper's "Both"), only the range differs.
    out = run_demo_with(monkeypatch, tmp_path, "The bass is a bit too loud. Reduce the bass by 3 to 6 dB.")
    assert "Agreement stem and direction (not the range)" in out
    assert "Agreement no" not in out and "Agreement yes" not in out


def test_demo_agreement_is_no_when_the_critic_names_another_stem(monkeypatch, tmp_path):
    out = run_demo_with(monkeypatch, tmp_path, "The vocals are far too loud. Reduce the vocals by 6 to 12 dB.")
    assert "Agreement no" in out and "Agreement yes" not in out
