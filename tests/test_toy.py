"""The toy multitrack generator and `mixcritic toy-stems`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mixcritic.cli import app
from mixcritic.errors import DatasetError
from mixcritic.labels import STEMS
from mixcritic.toy import (
    TOY_RATE_HZ,
    make_toy_song,
    toy_test_count,
    toy_track_name,
    toy_track_seed,
    write_toy_tree,
)


def rms_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + 1e-20))


@pytest.fixture(scope="module")
def songs() -> list[dict[str, np.ndarray]]:
    """Three 20 s songs (seeds 0..2), long enough to hold several vocal phrases and rests."""
    return [make_toy_song(seed, 20.0) for seed in range(3)]


def test_song_shape_dtype_and_stems():
    song = make_toy_song(7, 2.5, rate_hz=22_050)
    assert sorted(song) == sorted(STEMS)
    for audio in song.values():
        assert audio.shape == (55_125, 2)
        assert audio.dtype == np.float32
        assert np.isfinite(audio).all()


def test_same_seed_same_song_other_seed_other_song():
    first, again, other = make_toy_song(11, 3.0), make_toy_song(11, 3.0), make_toy_song(12, 3.0)
    for stem in STEMS:
        assert np.array_equal(first[stem], again[stem])
        assert not np.allclose(first[stem], other[stem], atol=1e-3)


def test_levels_are_balanced_and_the_mix_does_not_clip(songs):
    for song in songs:
        mix = sum(song.values())
        assert np.abs(mix).max() < 1.0
        levels = {stem: rms_db(audio) for stem, audio in song.items()}
        assert all(level > -40.0 for level in levels.values()), levels  # every stem is audible
        assert max(levels.values()) - min(levels.values()) < 15.0, levels  # none dominates absurdly


def test_stems_are_stereo_with_placement(songs):
    pads = songs[0]["other"]
    assert not np.allclose(pads[:, 0], pads[:, 1], atol=1e-3)  # pad voices are spread L/R
    drums = songs[0]["drums"]
    assert not np.allclose(drums[:, 0], drums[:, 1], atol=1e-3)  # hats are panned off-centre


def test_vocals_sing_in_phrases_with_real_rests(songs):
    for song in songs:
        vocals = song["vocals"].mean(axis=1)
        windows = vocals[: 20 * TOY_RATE_HZ].reshape(20, TOY_RATE_HZ)
        window_db = np.array([rms_db(w) for w in windows])
        silent = np.count_nonzero(window_db < -60.0)
        active = np.count_nonzero(window_db > -35.0)
        assert silent >= 2, window_db
        assert active >= 11, window_db  # most windows are sung


def test_any_four_second_excerpt_holds_some_singing(songs):
    """Rests last 2.0-2.8 s, so a 4 s chunk (the shortest synth segments in the tests) always has
    at least 0.5 s of voice and is never gated out for silent vocals."""
    for song in songs:
        sung = np.abs(song["vocals"].mean(axis=1)) > 1e-4
        for start in range(0, 16 * TOY_RATE_HZ + 1, TOY_RATE_HZ // 2):
            assert sung[start : start + 4 * TOY_RATE_HZ].sum() > TOY_RATE_HZ // 2, start / TOY_RATE_HZ


def test_levels_and_tempo_vary_per_seed():
    songs = [make_toy_song(seed, 6.0) for seed in range(6)]
    vocals_over_drums_db = [rms_db(s["vocals"]) - rms_db(s["drums"]) for s in songs]
    assert np.ptp(vocals_over_drums_db) > 2.0, vocals_over_drums_db
    beat_s = [_beat_period_s(song["drums"]) for song in songs]
    assert all(60 / 136 - 0.02 <= b <= 60 / 84 + 0.02 for b in beat_s), beat_s
    assert np.ptp(beat_s) > 0.05, beat_s


def _beat_period_s(drums: np.ndarray) -> float:
    """The strongest periodicity of the drum envelope between 84 and 136 BPM (10 ms frames)."""
    mono = drums.mean(axis=1)
    hop = 441
    envelope = np.sqrt(np.mean(mono[: mono.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    envelope -= envelope.mean()
    corr = np.correlate(envelope, envelope, mode="full")[envelope.size - 1 :]
    lags = np.arange(int(60 / 136 / 0.01) - 2, int(60 / 84 / 0.01) + 3)
    return float(lags[np.argmax(corr[lags])] * 0.01)


def test_drums_follow_a_beat_grid(songs):
    """Drum energy is periodic: the envelope's autocorrelation has a strong peak at a beat
    length between 84 and 136 BPM."""
    drums = songs[1]["drums"].mean(axis=1)
    hop = 441  # 10 ms frames
    envelope = np.sqrt(np.mean(drums[: drums.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    envelope -= envelope.mean()
    corr = np.correlate(envelope, envelope, mode="full")[envelope.size - 1 :]
    corr /= corr[0]
    lags = np.arange(int(60 / 136 / 0.01) - 1, int(60 / 84 / 0.01) + 2)
    assert corr[lags].max() > 0.3


def test_even_the_shortest_song_has_every_stem():
    """At the 1 s minimum of `toy-stems` every stem still sounds (the singer enters within a beat)."""
    for seed in range(12):
        for stem, audio in make_toy_song(seed, 1.0).items():
            assert np.isfinite(audio).all()
            assert rms_db(audio) > -40.0, (seed, stem)


def test_bad_song_arguments():
    with pytest.raises(ValueError, match="duration_s"):
        make_toy_song(0, 0.0)
    with pytest.raises(ValueError, match="rate_hz"):
        make_toy_song(0, 1.0, rate_hz=100)


@pytest.mark.parametrize(
    ("tracks", "fraction", "expected"),
    [(1, 0.25, 0), (2, 0.25, 1), (2, 0.0, 1), (8, 0.25, 2), (10, 0.5, 5), (3, 0.9, 2)],
)
def test_test_count(tracks, fraction, expected):
    assert toy_test_count(tracks, fraction) == expected


def test_tree_layout_and_format(tmp_path):
    dirs = write_toy_tree(tmp_path / "toy", tracks=3, seconds=2.0, seed=4)
    root = tmp_path / "toy"
    assert dirs == [root / "train" / "toy-000", root / "train" / "toy-001", root / "test" / "toy-002"]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["toy-000", "toy-001"]
    assert json.loads((root / "toy.json").read_text())["seed"] == 4
    for index, track_dir in enumerate(dirs):
        assert sorted(p.name for p in track_dir.iterdir()) == sorted(f"{stem}.wav" for stem in STEMS)
        expected = make_toy_song(toy_track_seed(4, index), 2.0)
        for stem in STEMS:
            info = sf.info(str(track_dir / f"{stem}.wav"))
            assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
                "WAV",
                "PCM_16",
                44_100,
                2,
                88_200,
            )
            audio, _ = sf.read(str(track_dir / f"{stem}.wav"), dtype="float32")
            np.testing.assert_allclose(audio, expected[stem], atol=1.0 / 32768 + 1e-7)
    assert toy_track_name(12) == "toy-012"
    assert len({toy_track_seed(4, i) for i in range(100)}) == 100


def test_resume_skips_complete_tracks_and_rewrites_broken_ones(tmp_path):
    root = tmp_path / "toy"
    dirs = write_toy_tree(root, tracks=3, seconds=1.5, seed=1)
    originals = {stem: sf.read(str(dirs[2] / f"{stem}.wav"))[0] for stem in STEMS}
    kept_mtimes = [(dirs[0] / f"{stem}.wav").stat().st_mtime_ns for stem in STEMS]
    (dirs[1] / "drums.wav").unlink()  # a track interrupted before its last stems
    sf.write(str(dirs[2] / "vocals.wav"), originals["vocals"][:1000], TOY_RATE_HZ, subtype="PCM_16")  # truncated
    (dirs[2] / ".bass.wav.tmp-999.wav").write_bytes(b"half")  # left over by a killed writer

    calls = []
    again = write_toy_tree(root, tracks=3, seconds=1.5, seed=1, on_track=lambda d, skipped: calls.append((d, skipped)))

    assert again == dirs
    assert calls == [(dirs[0], True), (dirs[1], False), (dirs[2], False)]
    assert [(dirs[0] / f"{stem}.wav").stat().st_mtime_ns for stem in STEMS] == kept_mtimes
    assert not list(dirs[2].glob(".*"))
    for stem in STEMS:
        np.testing.assert_array_equal(sf.read(str(dirs[2] / f"{stem}.wav"))[0], originals[stem])
    assert (dirs[1] / "drums.wav").is_file()


def test_interrupted_write_leaves_no_half_file(tmp_path, monkeypatch):
    root = tmp_path / "toy"
    real_write = sf.write
    written = []

    def failing_write(path, *args, **kwargs):
        if len(written) == 2:
            with open(path, "wb") as handle:  # a partial file under the temporary name
                handle.write(b"RIFF")
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(sf, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_toy_tree(root, tracks=2, seconds=1.0, seed=0)
    track_dir = root / "train" / "toy-000"
    assert sorted(p.name for p in track_dir.iterdir()) == ["bass.wav", "drums.wav"]

    monkeypatch.setattr(sf, "write", real_write)
    calls = []
    write_toy_tree(root, tracks=2, seconds=1.0, seed=0, on_track=lambda d, skipped: calls.append(skipped))
    assert calls == [False, False]
    assert sorted(p.name for p in track_dir.iterdir()) == sorted(f"{stem}.wav" for stem in STEMS)


def test_tree_refuses_other_options_and_foreign_folders(tmp_path):
    write_toy_tree(tmp_path / "toy", tracks=2, seconds=1.0, seed=0)
    with pytest.raises(DatasetError, match="--tracks 2 --seconds 1.0 --seed 0"):
        write_toy_tree(tmp_path / "toy", tracks=2, seconds=1.0, seed=1)
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "song.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="not a toy tree"):
        write_toy_tree(tmp_path / "music", tracks=2, seconds=1.0, seed=0)
    with pytest.raises(DatasetError, match="--seconds"):
        write_toy_tree(tmp_path / "new", tracks=2, seconds=0.5, seed=0)
    with pytest.raises(DatasetError, match="--seconds"):
        write_toy_tree(tmp_path / "new", tracks=2, seconds=601.0, seed=0)
    with pytest.raises(DatasetError, match="--test-fraction"):
        write_toy_tree(tmp_path / "new", tracks=2, seconds=1.0, seed=0, test_fraction=1.0)
    assert not (tmp_path / "new").exists()


runner = CliRunner()


def test_cli_writes_a_tree(tmp_path):
    out = tmp_path / "toy"
    result = runner.invoke(app, ["toy-stems", str(out), "--tracks", "2", "--seconds", "1.5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "1 in train/, 1 in test/" in result.stdout
    for split, track in (("train", "toy-000"), ("test", "toy-001")):
        for stem in STEMS:
            assert sf.info(str(out / split / track / f"{stem}.wav")).frames == 66_150
    again = runner.invoke(app, ["toy-stems", str(out), "--tracks", "2", "--seconds", "1.5", "--seed", "3"])
    assert again.exit_code == 0
    assert "2 were already complete" in again.stdout


def test_cli_bad_arguments(tmp_path):
    result = runner.invoke(app, ["toy-stems", str(tmp_path / "a"), "--seconds", "0"])
    assert result.exit_code == 2
    assert not (tmp_path / "a").exists()
    runner.invoke(app, ["toy-stems", str(tmp_path / "b"), "--tracks", "1", "--seconds", "1"])
    clash = runner.invoke(app, ["toy-stems", str(tmp_path / "b"), "--tracks", "1", "--seconds", "1", "--seed", "9"])
    assert clash.exit_code == 1
    assert "Error:" in clash.stderr and "re-run with those options" in clash.stderr
    assert "Traceback" not in clash.output
