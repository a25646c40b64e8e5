"""Documented synth behaviour that had no test: templates in records, stem_lufs, the 20 %-of-blocks
activity gate and its drop counters, hash suffixes for clashing track keys, broken tracks retried."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_synth import RATE_HZ, make_stems, make_tree, run_synth, write_track

from mixcritic import audio, labels
from mixcritic.dataset import open_dataset
from mixcritic.synthesis import SynthConfig, Track, track_keys, track_unit
from mixcritic.templates import TEMPLATE_VERSION, render_instruction, render_response


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    source = make_tree(tmp_path_factory.mktemp("tree"), n_train=2, n_test=1)
    out = tmp_path_factory.mktemp("small") / "data"
    result = run_synth(source, out, "--valid-fraction", "0")
    assert result.exit_code == 0, result.output
    return out


def rows(data_dir: Path) -> list[dict]:
    dataset = open_dataset(data_dir)
    return [r for split in ("train", "valid", "test") for r in dataset.records(split)]


def test_each_record_holds_its_rendered_templates(small):
    records = rows(small)
    assert len(records) == 3 * 2 * 30
    for r in records:
        assert r["instruction"] == render_instruction(r["instruction_template"], r["duration_s"], r["stems_present"], r["anchor_stem"])
        label = labels.Label.for_flaw(r["category"], r["target_stem"])
        assert r["response"] == render_response(label, r["response_template"])
        assert r["template_version"] == TEMPLATE_VERSION
    # the templates are drawn, not fixed: all ten of each kind appear in 180 records
    assert {r["instruction_template"] for r in records} == set(range(10))
    assert {r["response_template"] for r in records} == set(range(10))


def test_stem_lufs_is_each_unmodified_stems_loudness_in_its_chunk(small):
    dataset = open_dataset(small)
    checked = 0
    for r in rows(small)[::7]:
        start = round(r["start_s"] * 24_000)
        stems = np.asarray(dataset.stems(r["track_key"])[:, start : start + round(r["duration_s"] * 24_000)])
        for index, stem in enumerate(labels.STEMS):
            measured = audio.loudness_lufs(stems[index], 24_000)  # pyloudnorm, on the cached 24 kHz stem
            # 0.005 from rounding to 0.01 LU, the rest (measured max 0.0072 on all 180 records) from the
            # K-weighting filter state: the cache filters the whole track, pyloudnorm starts the excerpt cold
            assert r["stem_lufs"][stem] == pytest.approx(measured, abs=0.008), (r["id"], stem)
            checked += 1
    assert checked >= 100
    # the target's gain is not in stem_lufs: the same chunk gives the same values whatever the flaw
    by_chunk: dict[tuple, set] = {}
    for r in rows(small):
        by_chunk.setdefault((r["track_key"], r["chunk_index"]), set()).add(tuple(sorted(r["stem_lufs"].items())))
    assert all(len(values) == 1 for values in by_chunk.values())


# ---------------------------------------------------------------------------------------------
# The activity gate: a stem must be at or above gate_lufs in at least 20 % of a chunk's 400 ms blocks


HOP_SAMPLES = 2_400  # 100 ms at 24 kHz


def energy_for_lufs(lufs: float) -> float:
    """K-weighted energy of one 100 ms hop whose mean square gives ``lufs``."""
    return 10 ** ((lufs + 0.691) / 10) * HOP_SAMPLES


def gram_with_vocal_bursts(burst_hops: list[int], chunk_hops: int = 20) -> np.ndarray:
    """Per-hop K-weighted energies of independent stems: bass/drums/other steady at -20 LUFS, the
    vocals at -14 LUFS in the first ``burst_hops[c]`` hops of chunk ``c`` and silent otherwise."""
    gram = np.zeros((chunk_hops * len(burst_hops), 4, 4))
    for index in range(3):  # bass, drums, other
        gram[:, index, index] = energy_for_lufs(-20.0)
    for chunk, hops in enumerate(burst_hops):
        gram[chunk * chunk_hops : chunk * chunk_hops + hops, 3, 3] = energy_for_lufs(-14.0)
    gram[:, 3, 3] += 1e-30  # digital silence elsewhere
    return gram


def unit_for(gram: np.ndarray, **options) -> dict:
    config = SynthConfig(segment_s=2.0, **options)
    track = Track("train", "Bursts", Path("."), (), "train", "bursts")
    return track_unit(track, config, gram.shape[0] * HOP_SAMPLES, gram)


def test_activity_gate_needs_20_percent_of_the_blocks():
    # 2 s chunk = 20 hops = 17 blocks of 400 ms. A burst of k hops puts k blocks above the gate
    # (each block holding a burst hop measures at most 6 dB below the burst: far above -50 LUFS).
    # k = 4 -> 4/17 = 23.5 % (active); k = 3 -> 3/17 = 17.6 % (inactive), though loud when present.
    unit = unit_for(gram_with_vocal_bursts([4, 3]))
    by_chunk = {0: [], 1: []}
    for record in unit["records"]:
        by_chunk[record["chunk_index"]].append(record)
    assert len(by_chunk[0]) == 30 and {r["target_stem"] for r in by_chunk[0]} == {"bass", "drums", "vocals"}
    assert by_chunk[0][0]["stems_present"] == ["bass", "drums", "other", "vocals"]
    assert len(by_chunk[1]) == 10
    assert all("vocals" not in (r["target_stem"], r["anchor_stem"]) for r in by_chunk[1])
    assert by_chunk[1][0]["stems_present"] == ["bass", "drums", "other"]
    assert by_chunk[1][0]["stem_lufs"]["vocals"] > -20.0  # integrated loudness alone would pass the gate
    # the counters say exactly what was dropped: 10 samples with the vocals as target, 10 as anchor
    assert unit["stats"]["dropped_samples"] == {"target_inactive": 10, "anchor_inactive": 10}
    assert unit["stats"]["dropped_chunks"] == {} and unit["stats"]["kept_chunks"] == 2


def test_activity_gate_threshold_is_the_option():
    gram = gram_with_vocal_bursts([4, 3])
    lower = unit_for(gram, min_active_fraction=0.15)  # 3/17 = 17.6 % now passes
    assert len(lower["records"]) == 60 and lower["stats"]["dropped_samples"] == {}
    higher = unit_for(gram, min_active_fraction=0.3)  # neither burst passes
    assert len(higher["records"]) == 20
    assert higher["stats"]["dropped_samples"] == {"target_inactive": 20, "anchor_inactive": 20}


def test_a_chunk_with_only_one_active_target_is_dropped_and_counted():
    gram = gram_with_vocal_bursts([4, 0])
    gram[20:, 0, 0] = 1e-30  # chunk 1: vocals and bass silent -> only drums left as a target
    unit = unit_for(gram)
    assert {r["chunk_index"] for r in unit["records"]} == {0}
    assert unit["stats"]["dropped_chunks"] == {"fewer_than_two_active_targets": 1}
    assert unit["stats"]["dropped_samples"] == {"fewer_than_two_active_targets": 30}


# ---------------------------------------------------------------------------------------------
# Track keys and broken tracks


def test_clashing_track_keys_get_a_stable_hash_suffix():
    names = [("train", "Song A"), ("test", "Song A"), ("train", "song-a"), ("train", "AvaLuna - Waterduct"),
             ("train", "***")]
    keys = track_keys(names)
    assert keys[("train", "AvaLuna - Waterduct")] == "avaluna-waterduct"  # unique: no suffix
    assert keys[("train", "***")] == "track"
    clashing = [keys[item] for item in names[:3]]
    assert len(set(clashing)) == 3
    for key in clashing:
        assert key[:-7] == "song-a" and key[-7] == "-" and all(c in "0123456789abcdef" for c in key[-6:])
    # measured once; the key is part of every sample id, so it must never change between runs or versions
    assert clashing == [keys[item] for item in names[:3]] == list(track_keys(list(reversed(names[:3]))).values())[::-1]
    assert clashing == ["song-a-7ede4d", "song-a-ff42b7", "song-a-15fc76"]


def test_clashing_names_in_train_and_test_both_reach_the_dataset(tmp_path):
    source = tmp_path / "src"
    write_track(source, "train", "Same Name", make_stems(1))
    write_track(source, "train", "Other", make_stems(2))
    write_track(source, "test", "Same Name", make_stems(3))
    out = tmp_path / "data"
    assert run_synth(source, out, "--valid-fraction", "0").exit_code == 0
    keys = {(r["split"], r["track_key"]) for r in rows(out)}
    assert keys == {("train", "other"), ("train", track_keys([("train", "Same Name"), ("test", "Same Name")])[("train", "Same Name")]),
                    ("test", track_keys([("train", "Same Name"), ("test", "Same Name")])[("test", "Same Name")])}
    assert len({key for _, key in keys}) == 3


def test_a_broken_track_is_retried_on_the_next_run(tmp_path):
    source = make_tree(tmp_path / "src", n_train=2, n_test=1)
    bass = source / "train" / "Song 01" / "bass.wav"
    good = bass.read_bytes()
    bass.write_bytes(b"not audio")
    out = tmp_path / "data"
    first = run_synth(source, out, "--valid-fraction", "0")
    assert first.exit_code == 0 and "Song 01" in first.stderr
    info = open_dataset(out).info
    assert [b["track"] for b in info["broken_tracks"]] == ["Song 01"]
    assert "Song 01" not in {r["track"] for r in rows(out)}
    bass.write_bytes(good)  # the user fixes the file and runs the same command again
    second = run_synth(source, out, "--valid-fraction", "0")
    assert second.exit_code == 0, second.output
    assert "Warning" not in second.stderr
    info = open_dataset(out).info
    assert info["broken_tracks"] == []
    assert {r["track"] for r in rows(out)} == {"Song 00", "Song 01", "Test Song 0"}
    # the result equals a clean run from scratch
    clean = tmp_path / "clean"
    assert run_synth(source, clean, "--valid-fraction", "0").exit_code == 0
    for name in ("train.jsonl", "test.jsonl", "dataset.json"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    data, rate = sf.read(str(bass))
    assert rate == RATE_HZ and data.shape[1] == 2
