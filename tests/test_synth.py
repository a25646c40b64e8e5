"""`mixcritic synth` and `mixcritic render`: the stem cache, gating, the flaw grid, manifests,
determinism, resume, broken inputs, and rendering a sample exactly.

Fixtures are tiny trees of synthesised stems (sines, noise bursts) written with soundfile:
44.1 kHz stereo, 4.5 s, so a 2 s segment gives 2 chunks and a 0.5 s partial chunk per track.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mixcritic import audio, labels, stemloudness
from mixcritic.cli import app
from mixcritic.dataset import open_dataset
from mixcritic.errors import DatasetError
from mixcritic.synthesis import (
    SynthConfig,
    Track,
    assign_splits,
    build_track,
    draw_samples,
    full_grid,
    gain_steps,
    synthesize,
)

RATE_HZ = 44_100
SECONDS = 4.5
SEGMENT_S = 2.0
runner = CliRunner()


# ----------------------------------------------------------------------------------------------
# Fixtures


def make_stems(index: int, seconds: float = SECONDS, rate_hz: int = RATE_HZ) -> dict[str, np.ndarray]:
    """Four distinguishable, active stems (stereo float32): sine bass, noise-burst drums, a pad, a vocal-ish tone."""
    rng = np.random.default_rng(index)
    t = np.arange(int(round(seconds * rate_hz))) / rate_hz
    beat = (np.sin(2 * np.pi * 2.0 * t) > 0.2).astype(np.float64)
    mono = {
        "bass": (0.25 + 0.02 * (index % 8)) * np.sin(2 * np.pi * (55 + 5 * (index % 8)) * t),
        "drums": 0.15 * beat * rng.standard_normal(t.size),
        "other": 0.05 * np.sin(2 * np.pi * (440 + 20 * (index % 8)) * t),
        "vocals": 0.12 * np.sin(2 * np.pi * (220 + 10 * (index % 8)) * t + 3 * np.sin(2 * np.pi * 5 * t)),
    }
    pan = 0.3 + 0.1 * (index % 4)
    return {stem: np.stack([x * (1 - pan), x * pan], axis=1).astype(np.float32) for stem, x in mono.items()}


def write_track(root: Path, split: str, name: str, stems: dict[str, np.ndarray], ext: str = "wav", subtype: str = "PCM_24") -> Path:
    folder = root / split / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in stems.items():
        sf.write(str(folder / f"{stem}.{ext}"), data, RATE_HZ, subtype=subtype)
    return folder


def make_tree(root: Path, n_train: int = 4, n_test: int = 1) -> Path:
    for index in range(n_train):
        write_track(root, "train", f"Song {index:02d}", make_stems(index))
    for index in range(n_test):
        write_track(root, "test", f"Test Song {index}", make_stems(100 + index))
    return root


def run_synth(source: Path, out: Path, *args: str):
    result = runner.invoke(app, ["synth", str(source), "--out", str(out), "--segment-s", str(SEGMENT_S), *args])
    return result


def read_bytes(data_dir: Path) -> dict[str, bytes]:
    """Every output file a user reads (manifests, DPO pairs, dataset.json), as bytes."""
    names = ["dataset.json"] + [f"{s}.jsonl" for s in ("train", "valid", "test")] + [f"dpo/{s}.jsonl" for s in ("train", "valid", "test")]
    return {name: (data_dir / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "data"
    result = run_synth(tree, out)
    assert result.exit_code == 0, result.output
    return out


def all_records(data_dir: Path) -> list[dict]:
    dataset = open_dataset(data_dir)
    return [row for split in ("train", "valid", "test") for row in dataset.records(split)]


# ----------------------------------------------------------------------------------------------
# The grid


def test_full_grid_is_30_per_chunk_with_20_percent_per_category(built):
    rows = all_records(built)
    chunks: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        chunks.setdefault((row["track_key"], row["chunk_index"]), []).append(row)
    assert len(chunks) == 5 * 2  # 5 tracks x 2 whole 2 s chunks (the 0.5 s tail is dropped)
    for chunk_rows in chunks.values():
        assert len(chunk_rows) == 30
        combos = {(r["target_stem"], r["anchor_stem"], r["category"]) for r in chunk_rows}
        assert combos == set(full_grid(("bass", "drums", "other", "vocals")))
    for category in labels.CATEGORIES:
        assert sum(r["category"] == category for r in rows) == len(rows) // 5
    info = open_dataset(built).info
    assert info["totals"]["samples"] == len(rows) == 300
    assert info["totals"]["by_category"] == {c: 60 for c in labels.CATEGORIES}
    assert sum(d["partial_chunks"] for d in info["dropped"].values()) == 5
    assert sum(d["partial_chunk_s"] for d in info["dropped"].values()) == pytest.approx(2.5)


def test_other_is_never_target_nor_anchor_and_fields_are_consistent(built):
    rows = all_records(built)
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["target_stem"] in labels.TARGET_STEMS and row["anchor_stem"] in labels.TARGET_STEMS
        assert row["target_stem"] != row["anchor_stem"]
        low, high = gain_steps(row["category"])
        assert low / 100 <= row["gain_db"] <= high / 100
        assert row["gain_db"] == round(row["gain_db"], 2)
        expected = labels.CORRECTION_DB[row["category"]]
        assert row["correction_db"] == (list(expected) if expected else None)
        assert row["start_s"] == row["chunk_index"] * SEGMENT_S and row["duration_s"] == SEGMENT_S
        assert row["stems_present"] == list(labels.STEMS)
        assert row["id"] == f"{row['track_key']}.{row['chunk_index']:04d}.{row['target_stem']}-vs-{row['anchor_stem']}.{row['category']}"
        for key in ("instruction", "response", "instruction_template", "response_template", "template_version"):
            assert key in row


def test_gain_ranges_do_not_overlap_and_milder_category_owns_the_boundary():
    assert gain_steps("no_error") == (-300, 300)
    assert gain_steps("quiet") == (-600, -301)
    assert gain_steps("very_quiet") == (-1200, -601)
    assert gain_steps("loud") == (301, 600)
    assert gain_steps("very_loud") == (601, 1200)


def test_draw_n_per_chunk_keeps_categories_balanced():
    import random

    grid = full_grid(("bass", "drums", "vocals"))
    five = draw_samples(grid, 5, random.Random(0), category_offset=2)
    assert sorted(e[2] for e in five) == sorted(labels.CATEGORIES)
    seven = draw_samples(grid, 7, random.Random(1), category_offset=0)
    assert len(set(seven)) == 7
    assert max(sum(e[2] == c for e in seven) for c in labels.CATEGORIES) == 2
    assert draw_samples(grid, 40, random.Random(2), 0) == grid


def test_samples_per_chunk_n(tree, tmp_path):
    out = tmp_path / "data"
    result = run_synth(tree, out, "--samples-per-chunk", "3", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)  # --json: only JSON on stdout
    assert summary["options"]["samples_per_chunk"] == 3 and summary["totals"]["samples"] == 30
    rows = all_records(out)
    assert len(rows) == 10 * 3
    counts = [sum(r["category"] == c for r in rows) for c in labels.CATEGORIES]
    assert max(counts) - min(counts) <= 5  # within one per track
    per_track = {}
    for row in rows:
        per_track.setdefault(row["track_key"], []).append(row["category"])
    for categories in per_track.values():  # 2 chunks x 3 = 6 consecutive round-robin slots
        assert max(categories.count(c) for c in labels.CATEGORIES) == 2
        assert len(set(categories)) == 5


# ----------------------------------------------------------------------------------------------
# Rendering is exact


def least_squares_weights(mix: np.ndarray, stems: np.ndarray) -> np.ndarray:
    weights, *_ = np.linalg.lstsq(stems.T.astype(np.float64), mix.astype(np.float64), rcond=None)
    return weights


def test_rendered_gain_equals_gain_db_by_least_squares(built):
    dataset = open_dataset(built)
    records = [r for r in dataset.records("train") if r["chunk_index"] == 1][:30]
    assert len(records) == 30
    for record in records:
        start = round(record["start_s"] * 24_000)
        stems = np.asarray(dataset.stems(record["track_key"])[:, start : start + 48_000])
        target, anchor = labels.STEMS.index(record["target_stem"]), labels.STEMS.index(record["anchor_stem"])
        for normalize in (False, True):
            weights = least_squares_weights(dataset.render(record, normalize=normalize), stems)
            estimate_db = 20 * np.log10(weights[target] / weights[anchor])
            assert estimate_db == pytest.approx(record["gain_db"], abs=0.1)
            assert estimate_db == pytest.approx(record["gain_db"], abs=1e-3)  # in fact exact


def test_render_normalises_to_target_and_render_stems_sum_to_raw_mix(built):
    dataset = open_dataset(built)
    for record in dataset.records("test")[::7]:
        mix = dataset.render(record)
        assert mix.dtype == np.float32 and mix.shape == (48_000,)
        assert audio.loudness_lufs(mix, 24_000) == pytest.approx(labels.DEFAULT_TARGET_LUFS, abs=0.05)
        parts = dataset.render_stems(record)
        assert list(parts) == list(labels.STEMS)
        np.testing.assert_allclose(sum(parts.values()), dataset.render(record, normalize=False), atol=1e-6)


def test_cache_equals_the_audio_layer_so_render_equals_a_naive_mix(tree, built):
    """Mixing is linear: rendering from the cache equals mixing the original files."""
    dataset = open_dataset(built)
    record = next(r for r in dataset.records("test") if r["chunk_index"] == 1 and r["category"] == "very_loud")
    folder = tree / "test" / record["track"]
    naive = np.zeros(48_000, np.float64)
    for stem in labels.STEMS:
        data, rate = audio.read_audio(folder / f"{stem}.wav")
        mono = audio.resample(audio.to_mono(data), rate, 24_000)[48_000:96_000]
        gain_db = record["gain_db"] if stem == record["target_stem"] else 0.0
        naive += audio.apply_gain_db(mono, gain_db)
    np.testing.assert_allclose(dataset.render(record, normalize=False), naive, atol=1e-6)
    expected = audio.normalize_loudness(naive.astype(np.float32), 24_000, -23.0)
    np.testing.assert_allclose(dataset.render(record), expected, atol=2e-3 * np.abs(expected).max())


def test_dataset_pickles_without_open_memory_maps(built):
    dataset = open_dataset(built)
    record = dataset.records("train")[0]
    before = dataset.render(record)
    state = pickle.dumps(dataset)
    assert len(state) < 200_000  # no audio, no memmap
    clone = pickle.loads(state)
    assert clone._stems == {}
    np.testing.assert_array_equal(clone.render(record), before)


def test_stem_loudness_from_hop_energies_matches_pyloudnorm():
    rng = np.random.default_rng(3)
    stems = np.stack([make_stems(i, 6.0, 24_000)[s][:, 0] for i, s in enumerate(labels.STEMS)])
    stems[1, 40_000:90_000] = 0.0  # a gap, so gating matters
    gram = stemloudness.hop_gram(stems, 24_000)
    for first, hops in [(0, 60), (10, 20), (25, 4), (7, 31)]:
        gains = rng.uniform(0.1, 4.0, size=4)
        excerpt = (gains[:, None] * stems[:, first * 2400 : (first + hops) * 2400]).sum(axis=0)
        from_hops = stemloudness.integrated_loudness_lufs(stemloudness.hop_energy(gram[first : first + hops], gains), 24_000)
        assert from_hops == pytest.approx(audio.loudness_lufs(excerpt, 24_000), abs=0.05)
    silent = stemloudness.hop_gram(np.zeros((4, 24_000)), 24_000)
    assert stemloudness.integrated_loudness_lufs(stemloudness.hop_energy(silent, np.ones(4)), 24_000) == float("-inf")
    assert stemloudness.integrated_loudness_lufs(np.zeros(10), 24_000) == float("-inf")


# ----------------------------------------------------------------------------------------------
# Splits and gating


def fake_tracks(n_train: int, n_test: int = 1) -> list[Track]:
    return [Track("train", f"T{i}", Path(f"/x/T{i}"), ()) for i in range(n_train)] + [
        Track("test", f"E{i}", Path(f"/x/E{i}"), ()) for i in range(n_test)
    ]


@pytest.mark.parametrize(("n_train", "fraction", "n_valid"), [(1, 0.1, 0), (2, 0.1, 1), (9, 0.1, 1), (20, 0.1, 2), (30, 0.1, 3), (10, 0.0, 0), (3, 0.9, 2)])
def test_validation_is_carved_from_train_by_track(n_train, fraction, n_valid):
    tracks = assign_splits(fake_tracks(n_train), seed=5, valid_fraction=fraction)
    assert sum(t.split == "valid" for t in tracks) == n_valid
    assert [t.split for t in tracks if t.source_split == "test"] == ["test"]
    again = assign_splits(list(reversed(fake_tracks(n_train))), seed=5, valid_fraction=fraction)
    assert {t.name for t in again if t.split == "valid"} == {t.name for t in tracks if t.split == "valid"}


def test_no_track_appears_in_two_splits(built):
    dataset = open_dataset(built)
    tracks = {split: {r["track"] for r in dataset.records(split)} for split in ("train", "valid", "test")}
    assert tracks["train"] and tracks["valid"] and tracks["test"]
    assert not (tracks["train"] & tracks["valid"] or tracks["train"] & tracks["test"] or tracks["valid"] & tracks["test"])
    assert all(r["split"] == split for split in tracks for r in dataset.records(split))


def test_silent_vocals_give_no_vocals_target_or_anchor(tmp_path):
    stems = make_stems(7)
    stems["vocals"][:] = 0.0
    source = tmp_path / "src"
    write_track(source, "train", "Instrumental", stems)
    write_track(source, "train", "Song", make_stems(8))
    out = tmp_path / "data"
    assert run_synth(source, out, "--valid-fraction", "0").exit_code == 0
    dataset = open_dataset(out)
    rows = [r for r in dataset.records("train") if r["track"] == "Instrumental"]
    assert len(rows) == 2 * 10  # bass vs drums and drums vs bass, 5 categories, 2 chunks
    assert all("vocals" not in (r["target_stem"], r["anchor_stem"]) for r in rows)
    assert all(r["stems_present"] == ["bass", "drums", "other"] for r in rows)
    listing = {t["track"]: t for t in dataset.info["tracks"]["train"]}
    assert listing["Instrumental"]["inactive_stems"] == ["vocals"]
    assert dataset.info["dropped"]["train"]["samples"] == {"anchor_inactive": 2 * 10, "target_inactive": 2 * 10}


def test_gating_drops_a_stem_far_below_the_mix_and_a_silent_chunk(tmp_path):
    stems = make_stems(9, seconds=6.5)
    stems["bass"] *= 10 ** (-40 / 20)  # ~40 LU below the mix: inaudible, not a valid target
    for stem in stems:
        stems[stem][int(4.0 * RATE_HZ) :] = 0.0  # third chunk is silence
    source = tmp_path / "src"
    write_track(source, "test", "Quiet Bass", stems)
    out = tmp_path / "data"
    assert run_synth(source, out).exit_code == 0
    dataset = open_dataset(out)
    rows = dataset.records("test")
    assert {(r["target_stem"], r["anchor_stem"]) for r in rows} == {("drums", "vocals"), ("vocals", "drums")}
    assert len(rows) == 2 * 10
    assert dataset.info["dropped"]["test"]["chunks"] == {"silent_mix": 1}
    assert dataset.info["gating"]["gate_relative_lu"] == -20.0


# ----------------------------------------------------------------------------------------------
# Determinism and resume


def test_manifests_are_byte_identical_for_any_worker_count(tree, built, tmp_path):
    out = tmp_path / "data"
    result = run_synth(tree, out, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert read_bytes(out) == read_bytes(built)
    other_seed = tmp_path / "seed1"
    assert run_synth(tree, other_seed, "--seed", "1").exit_code == 0
    assert read_bytes(other_seed)["train.jsonl"] != read_bytes(built)["train.jsonl"]


def test_resume_after_interruption_gives_identical_output(tree, built, tmp_path, monkeypatch):
    import mixcritic.synthesis as synthesis

    out = tmp_path / "data"
    calls = []

    def interrupted(job):
        calls.append(job.track.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return build_track(job)

    monkeypatch.setattr(synthesis, "build_track", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tree, out, SynthConfig(segment_s=SEGMENT_S), show_progress=False)
    monkeypatch.undo()
    assert not (out / "dataset.json").exists()
    assert len(list((out / "work").glob("*.json"))) == 1 + 2  # options + two finished tracks

    # Damage what an unlucky kill could leave: a stray temp file, a truncated cache, a half unit.
    units = sorted(p for p in (out / "work").glob("*.json") if not p.name.startswith("_"))
    cache = out / "cache" / f"{units[0].stem}.npy"
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    units[1].write_text(units[1].read_text()[:100])
    (out / "cache" / ".song-03.npy.tmp-999").write_bytes(b"\x93NUMPY garbage")

    result = synthesize(tree, out, SynthConfig(segment_s=SEGMENT_S), show_progress=False)
    assert (result.tracks_built, result.tracks_resumed) == (5, 0)
    assert read_bytes(out) == read_bytes(built)
    assert not list((out / "cache").glob(".*tmp*"))

    again = synthesize(tree, out, SynthConfig(segment_s=SEGMENT_S), show_progress=False)
    assert (again.tracks_built, again.tracks_resumed) == (0, 5)
    assert read_bytes(out) == read_bytes(built)


def test_changed_options_are_refused_unless_overwrite(tree, tmp_path):
    out = tmp_path / "data"
    assert run_synth(tree, out).exit_code == 0
    result = run_synth(tree, out, "--seed", "3")
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "seed 0 -> 3" in result.stderr and "--overwrite" in result.stderr
    assert run_synth(tree, out, "--seed", "3", "--overwrite").exit_code == 0
    assert open_dataset(out).info["options"]["seed"] == 3
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    result = run_synth(tree, stranger, "--overwrite")
    assert result.exit_code == 1 and "not a mixcritic dataset" in result.stderr
    assert (stranger / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# Broken inputs


def break_unreadable(folder: Path) -> Path:
    (folder / "bass.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    return folder / "bass.wav"


def break_missing(folder: Path) -> Path:
    (folder / "drums.wav").unlink()
    return folder / "drums.wav"


def break_unequal(folder: Path) -> Path:
    data, rate = sf.read(str(folder / "vocals.wav"))
    sf.write(str(folder / "vocals.wav"), data[: len(data) - rate // 10], rate, subtype="PCM_24")  # 100 ms short
    return folder / "vocals.wav"


def break_nan(folder: Path) -> Path:
    data, rate = sf.read(str(folder / "other.wav"), dtype="float32")
    data[1000, 0] = np.nan
    sf.write(str(folder / "other.wav"), data, rate, subtype="FLOAT")
    return folder / "other.wav"


def break_duplicate(folder: Path) -> Path:
    data, rate = sf.read(str(folder / "bass.wav"), dtype="float32")
    sf.write(str(folder / "bass.flac"), data, rate)
    return folder / "bass.flac"


@pytest.mark.parametrize(
    ("breaker", "reason"),
    [
        (break_unreadable, "cannot read audio"),
        (break_missing, "missing stem 'drums'"),
        (break_unequal, "stems may differ by at most"),
        (break_nan, "NaN/Inf"),
        (break_duplicate, "2 files for stem 'bass'"),
    ],
)
def test_broken_track_is_skipped_with_a_warning_or_fatal_with_strict(tmp_path, built, breaker, reason):
    source = make_tree(tmp_path / "src")
    bad = tmp_path / "src" / "train" / "Song 01"
    named = breaker(bad)
    out = tmp_path / "data"
    result = run_synth(source, out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "Warning:" in line]
    assert len(warnings) == 1 and reason in warnings[0] and "Song 01" in warnings[0]
    info = open_dataset(out).info
    assert [(b["track"], Path(b["file"]).name) for b in info["broken_tracks"]] == [("Song 01", named.name)]
    assert reason in info["broken_tracks"][0]["reason"]
    good = {r["id"]: r for r in all_records(built) if r["track"] != "Song 01"}
    assert {r["id"]: r for r in all_records(out)} == good  # nothing else is lost

    strict = run_synth(source, tmp_path / "strict", "--strict")
    assert strict.exit_code == 1
    errors = [line for line in strict.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and named.name in errors[0] and reason in errors[0]
    assert "Traceback" not in strict.output


def test_unequal_lengths_within_tolerance_are_trimmed(tmp_path):
    source = tmp_path / "src"
    folder = write_track(source, "test", "Almost", make_stems(3))
    data, rate = sf.read(str(folder / "bass.wav"))
    sf.write(str(folder / "bass.wav"), data[: len(data) - 200], rate, subtype="PCM_24")  # 4.5 ms short
    out = tmp_path / "data"
    result = run_synth(source, out)
    assert result.exit_code == 0 and "Warning" not in result.stderr
    stems = open_dataset(out).stems("almost")
    assert stems.shape == (4, round((4.5 - 200 / RATE_HZ) * 24_000))


def test_folder_without_tracks_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    result = run_synth(tmp_path / "empty", tmp_path / "data")
    assert result.exit_code == 1
    assert "no tracks found" in result.stderr and "train/<track>/bass.wav" in result.stderr
    assert run_synth(tmp_path / "nowhere", tmp_path / "data").exit_code == 1


def test_config_validation_names_the_option():
    with pytest.raises(DatasetError, match="--segment-s 2.05"):
        SynthConfig(segment_s=2.05)
    with pytest.raises(DatasetError, match="--valid-fraction"):
        SynthConfig(valid_fraction=1.0)


# ----------------------------------------------------------------------------------------------
# The render command


def test_render_cli_writes_24k_mono_at_target_loudness(built, tmp_path):
    record = open_dataset(built).records("valid")[3]
    out = tmp_path / "sample.wav"
    result = runner.invoke(app, ["render", str(built), record["id"], "--out", str(out)])
    assert result.exit_code == 0, result.output
    data, rate = sf.read(str(out), dtype="float32", always_2d=True)
    assert rate == 24_000 and data.shape == (48_000, 1) and sf.info(str(out)).subtype == "FLOAT"
    assert audio.loudness_lufs(data[:, 0], rate) == pytest.approx(-23.0, abs=0.05)
    raw = tmp_path / "raw.wav"
    result = runner.invoke(app, ["render", str(built), record["id"], "--out", str(raw), "--raw", "--json"])
    summary = json.loads(result.stdout)
    assert summary["normalized"] is False and summary["sample_rate_hz"] == 24_000
    np.testing.assert_array_equal(sf.read(str(raw), dtype="float32")[0], open_dataset(built).render(record, normalize=False))


def test_render_cli_unknown_id_says_where_ids_are(built, tmp_path):
    known = open_dataset(built).records("train")[0]["id"]
    result = runner.invoke(app, ["render", str(built), known + "x", "--out", str(tmp_path / "x.wav")])
    assert result.exit_code == 1
    assert "no sample with id" in result.stderr and "train.jsonl" in result.stderr and known in result.stderr
    assert not (tmp_path / "x.wav").exists()
    result = runner.invoke(app, ["render", str(tmp_path), known, "--out", str(tmp_path / "x.wav")])
    assert result.exit_code == 1 and "mixcritic synth" in result.stderr


# ----------------------------------------------------------------------------------------------
# Real music: musdb7-cc (12 songs, 7 s excerpts)


def test_synth_and_render_on_real_music(tmp_path, musdb7):
    """Skipped locally without ../shared/musdb7-cc, a failure in CI (conftest.musdb7_root)."""
    out = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "mixcritic", "synth", str(musdb7), "--out", str(out), "--segment-s", "5", "--json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["totals"]["tracks"] == 12 and summary["broken_tracks"] == []
    dataset = open_dataset(out)
    assert [dataset.info["counts"][s]["tracks"] for s in ("train", "valid", "test")] == [7, 1, 4]
    rows = [r for s in ("train", "valid", "test") for r in dataset.records(s)]
    assert len(rows) == summary["totals"]["samples"] > 0
    for record in rows[::37]:
        start = round(record["start_s"] * 24_000)
        stems = np.asarray(dataset.stems(record["track_key"])[:, start : start + 120_000])
        weights = least_squares_weights(dataset.render(record), stems)
        target, anchor = labels.STEMS.index(record["target_stem"]), labels.STEMS.index(record["anchor_stem"])
        estimate_db = 20 * np.log10(weights[target] / weights[anchor])
        assert estimate_db == pytest.approx(record["gain_db"], abs=0.1)
        assert estimate_db == pytest.approx(record["gain_db"], abs=1e-3)  # in fact exact
    wav = tmp_path / "real.wav"
    result = runner.invoke(app, ["render", str(out), rows[0]["id"], "--out", str(wav)])
    assert result.exit_code == 0, result.output
    data, rate = sf.read(str(wav), dtype="float32")
    assert rate == 24_000 and data.ndim == 1 and data.shape[0] == 120_000
    assert audio.loudness_lufs(data, rate) == pytest.approx(-23.0, abs=0.05)


# ----------------------------------------------------------------------------------------------
# Text: responses and DPO pairs agree with the labels


def test_responses_parse_back_to_the_label_and_dpo_pairs_are_wrong_on_purpose(built):
    from mixcritic import templates

    dataset = open_dataset(built)
    for split in ("train", "valid", "test"):
        rows = dataset.records(split)
        pairs = dataset.dpo_pairs(split)
        assert [p["id"] for p in pairs] == [r["id"] for r in rows]
        for row, pair in zip(rows, pairs):
            label = labels.Label.for_flaw(row["category"], row["target_stem"])
            assert templates.parse_response(row["response"]) == label
            assert pair["chosen"] == row["response"] and pair["instruction"] == row["instruction"]
            rejected = labels.Label(pair["rejected_label"]["category"], pair["rejected_label"]["stem"],
                                    tuple(pair["rejected_label"]["correction_db"]) if pair["rejected_label"]["correction_db"] else None)
            assert rejected != label and templates.parse_response(pair["rejected"]) == rejected
            assert pair["rejected_kind"] in templates.REJECTION_KINDS
            assert (pair["rejected_kind"] == "false_alarm") == (row["category"] == "no_error")


def test_hop_cache_equals_hop_gram_of_the_cached_stems_whatever_the_threads(tree, tmp_path):
    from mixcritic.synthesis import discover_tracks, load_track, save_npy_atomic

    track = discover_tracks(tree)[0]
    stems, gram = load_track(track, 0.01, threads=1)
    stems_threaded, gram_threaded = load_track(track, 0.01, threads=4)
    np.testing.assert_array_equal(np.stack(stems), np.stack(stems_threaded))
    np.testing.assert_array_equal(gram, gram_threaded)
    np.testing.assert_array_equal(gram, stemloudness.hop_gram(np.stack(stems), 24_000))
    save_npy_atomic(tmp_path / "rows.npy", stems)  # rows written one by one, no stacked copy
    np.save(tmp_path / "stacked.npy", np.stack(stems))
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "stacked.npy").read_bytes()


def test_render_off_the_hop_grid_measures_the_mix_itself(built):
    dataset = open_dataset(built)
    record = dict(dataset.records("train")[0], start_s=0.05, duration_s=1.23)
    mix = dataset.render(record)
    assert mix.shape == (round(1.23 * 24_000),)
    assert audio.loudness_lufs(mix, 24_000) == pytest.approx(-23.0, abs=0.01)


def test_no_usable_track_is_an_error_not_an_empty_dataset(tmp_path):
    source = tmp_path / "src"
    folder = write_track(source, "train", "Only", make_stems(1))
    (folder / "vocals.wav").unlink()
    result = run_synth(source, tmp_path / "data")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error == (
        f"Error: {source / 'train'}: every track is broken ({folder / 'vocals.wav'}); no dataset was written. "
        "Fix or replace those files (see the warnings above) and run the same command again"
    )
    assert not (tmp_path / "data").exists()  # nothing half-made: a retry with any options starts clean
    retry = run_synth(source, tmp_path / "data", "--gate-lufs", "-60")
    assert "other settings" not in retry.stderr and "--overwrite" not in retry.stderr


def test_a_source_split_of_broken_tracks_is_an_error_not_an_empty_split(tmp_path):
    source = tmp_path / "src"
    folder = write_track(source, "train", "Only", make_stems(1))
    write_track(source, "test", "Fine", make_stems(2))
    sf.write(str(folder / "bass.wav"), np.zeros((600, 2), dtype=np.float32), RATE_HZ)  # a truncated export
    out = tmp_path / "existing"
    out.mkdir()
    result = run_synth(source, out)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {source / 'train'}: every track is broken")
    assert list(out.iterdir()) == []  # the folder the user made is kept, empty


def test_out_that_is_a_file_is_a_clean_error(tmp_path):
    source = write_track(tmp_path / "src", "train", "Only", make_stems(1)).parent.parent
    out = tmp_path / "data.txt"
    out.write_text("keep me")
    result = run_synth(source, out)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.strip() == f"Error: --out {out}: is a file, not a folder; give a new or empty folder for the dataset"
    assert out.read_text() == "keep me"


def test_names_with_brackets_are_printed_verbatim(tmp_path):
    source = tmp_path / "src [v2]"
    write_track(source, "train", "Song [Live]", make_stems(1))
    folder = write_track(source, "train", "Other [Demo]", make_stems(2))
    (folder / "bass.wav").unlink()
    out = tmp_path / "data [x]"
    result = run_synth(source, out)
    assert result.exit_code == 0, result.output
    assert "skipping track 'Other [Demo]'" in result.stderr and "Other [Demo]/bass.wav" in result.stderr
    assert f"{out}: samples" in result.stdout


def _render_in_child(dataset, record, queue) -> None:
    peak = float(np.abs(dataset.render(record)).max())
    queue.put((peak, dataset._pid == os.getpid(), len(dataset._stems)))


def test_dataset_renders_the_same_in_forked_and_spawned_workers(built):
    """Like DataLoader workers: fork inherits the object (maps are re-opened), spawn pickles it."""
    import multiprocessing

    dataset = open_dataset(built)
    record = dataset.records("test")[5]
    expected = float(np.abs(dataset.render(record)).max())  # maps opened before the workers start
    for method in ("fork", "spawn"):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        child = context.Process(target=_render_in_child, args=(dataset, record, queue))
        child.start()
        result = queue.get(timeout=60)
        child.join(timeout=60)
        assert result == (expected, True, 1), method


def test_ctrl_c_then_rerun_gives_identical_output(tmp_path):
    """A real interruption of the CLI (SIGINT once the first track is done), then the same command."""
    import signal
    import time

    source = make_tree(tmp_path / "src", n_train=11, n_test=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "mixcritic", "synth", str(source), "--segment-s", str(SEGMENT_S), "--out"]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*command, str(interrupted)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not len(list((interrupted / "work").glob("song-*.json"))) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "re-run the same command to resume" in stderr
    assert not (interrupted / "dataset.json").exists()
    assert subprocess.run([*command, str(interrupted)], env=env, capture_output=True).returncode == 0
    assert subprocess.run([*command, str(tmp_path / "straight")], env=env, capture_output=True).returncode == 0
    assert read_bytes(interrupted) == read_bytes(tmp_path / "straight")
