"""Session input: stem names and aliases, overrides, mixed-file mode, padding, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mixcritic.errors import AudioError
from mixcritic.session import (
    InputError,
    name_tokens,
    open_session,
    stem_for_name,
)

RATE_HZ = 24_000


def tone(seconds: float, freq_hz: float, rate_hz: int = RATE_HZ, amp: float = 0.1, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate_hz))) / rate_hz
    mono = (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def write(path: Path, audio: np.ndarray, rate_hz: int = RATE_HZ, subtype: str | None = None) -> Path:
    sf.write(str(path), audio, rate_hz, subtype=subtype)
    return path


@pytest.mark.parametrize(
    "name, stem",
    [
        ("vocals", "vocals"), ("Vox", "vocals"), ("01 Lead Vocal", "vocals"), ("LeadVox_v2", "vocals"),
        ("BVs", "vocals"), ("backing vocals", "vocals"), ("VOCAL", "vocals"),
        ("drums", "drums"), ("Drum Bus", "drums"), ("kit", "drums"), ("Kick In", "drums"), ("HiHat", "drums"),
        ("Bass Drum", "drums"), ("sub kick", "drums"), ("OH L", "drums"),
        ("bass", "bass"), ("Bass Guitar DI", "bass"), ("SUB", "bass"), ("SynthBass", "bass"), ("bass-synth", "bass"),
        ("other", "other"),
    ],
)
def test_alias_names_map_to_canonical_stems(name, stem):
    assert stem_for_name(name) == (stem, "name")


@pytest.mark.parametrize(
    "name, why",
    [
        ("Guitar L", "unmatched"),
        ("Audio 1_03", "unmatched"),
        ("Vocal Bass", "ambiguous: matches bass and vocals"),
        ("mixture", "a full mix, not a stem"),
        ("Song Mix v3", "a full mix, not a stem"),
        ("Click", "a click/guide/reference track, not part of the mix"),
    ],
)
def test_names_that_are_not_a_stem(name, why):
    assert stem_for_name(name) == (None, why)


def test_stem_alias_beats_mix_name():
    assert stem_for_name("Drum Mix") == ("drums", "name")


def test_name_tokens_split_case_digits_and_punctuation():
    assert name_tokens("01_LeadVox-v2") == ("01", "lead", "vox", "v", "2")


def make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "stems"
    folder.mkdir()
    write(folder / "Lead Vox.wav", tone(3.0, 440, 44_100), 44_100, "PCM_16")
    write(folder / "BVs.flac", tone(3.0, 660, 48_000), 48_000)
    write(folder / "Kick.aiff", tone(3.0, 60, 44_100, channels=2), 44_100, "PCM_24")
    write(folder / "Bass Guitar.wav", tone(2.5, 80), RATE_HZ, "FLOAT")
    write(folder / "Guitar.ogg", tone(3.0, 330, 44_100), 44_100)
    write(folder / "mixture.wav", tone(3.0, 100))
    (folder / "notes.txt").write_text("session notes")
    (folder / "Bounces").mkdir()
    return folder


def test_folder_discovery_sums_aliases_pads_and_lists_ignored(tmp_path):
    folder = make_folder(tmp_path)
    session = open_session(folder, "vox")
    assert session.mode == "stems"
    assert session.anchor_stem == "vocals"
    assert list(session.audio) == ["bass", "drums", "other", "vocals"]
    assert session.stems_present == ("bass", "drums", "other", "vocals")
    by_name = {f.path.name: f for f in session.files}
    assert {n: (f.stem, f.how) for n, f in by_name.items()} == {
        "Lead Vox.wav": ("vocals", "name"), "BVs.flac": ("vocals", "name"), "Kick.aiff": ("drums", "name"),
        "Bass Guitar.wav": ("bass", "name"), "Guitar.ogg": ("other", "unmatched"),
    }
    assert by_name["Kick.aiff"].channels == 2 and by_name["BVs.flac"].rate_hz == 48_000
    # the 2.5 s bass is padded by 0.5 s; the others are not
    assert by_name["Bass Guitar.wav"].padded_s == pytest.approx(0.5)
    assert [n for n, f in by_name.items() if f.padded_s] == ["Bass Guitar.wav"]
    assert session.num_samples == 3 * RATE_HZ
    assert not np.any(session.audio["bass"][int(2.5 * RATE_HZ) + 10 :])
    ignored = {f.path.name: f.reason for f in session.ignored}
    assert ignored == {
        "Bounces": "a folder (not searched; pass files in it with --stem)",
        "mixture.wav": "a full mix, not a stem",
        "notes.txt": "not an audio file",
    }


def test_two_files_for_one_stem_are_summed(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "vox.wav", tone(2.0, 440, amp=0.1))
    write(folder / "vocal double.wav", tone(2.0, 440, amp=0.1))
    write(folder / "drums.wav", tone(2.0, 60))
    session = open_session(folder, "drums")
    assert np.max(np.abs(session.audio["vocals"])) == pytest.approx(0.2, rel=1e-3)


def test_stereo_downmix_and_resampling_preserve_level(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(2.0, 440, 44_100, amp=0.5, channels=2), 44_100, "PCM_24")
    session = open_session(folder, "drums")
    assert session.rate_hz == RATE_HZ and session.num_samples == 2 * RATE_HZ
    assert np.max(np.abs(session.audio["drums"][1000:-1000])) == pytest.approx(0.5, rel=1e-3)


def test_stem_override_replaces_the_guess(tmp_path):
    folder = make_folder(tmp_path)
    session = open_session(folder, "vocals", ["vocals=Guitar.ogg", "bass=mixture.wav"])
    files = {f.path.name: (f.stem, f.how) for f in session.files}
    # the override takes Guitar.ogg out of other and replaces both guessed vocal files
    # an overridden stem keeps only its --stem files; the overridden file leaves other
    assert files == {
        "Kick.aiff": ("drums", "name"), "Guitar.ogg": ("vocals", "override"), "mixture.wav": ("bass", "override"),
    }
    assert set(session.audio) == {"bass", "drums", "vocals"}
    # an overridden file is used, so it is no longer listed as ignored
    assert sorted(f.path.name for f in session.ignored) == ["Bounces", "notes.txt"]


def test_stem_overrides_without_a_folder(tmp_path):
    vox = write(tmp_path / "a.wav", tone(2.0, 440))
    kit = write(tmp_path / "b.wav", tone(2.0, 60))
    session = open_session(None, "drums", [f"vox={vox}", f"drums={kit}"])
    assert set(session.audio) == {"drums", "vocals"} and session.path is None


def test_single_file_mode_defaults_and_override(tmp_path):
    song = write(tmp_path / "song.wav", tone(4.0, 220, 44_100, channels=2), 44_100)
    session = open_session(song, "vocals")
    assert session.mode == "mix" and list(session.audio) == ["mix"]
    assert session.stems_present == ("bass", "drums", "other", "vocals")
    assert session.num_samples == 4 * RATE_HZ
    session = open_session(song, "bass", stems_present="vox, Bass,drums")
    assert session.stems_present == ("bass", "drums", "vocals")


@pytest.mark.parametrize(
    "anchor, message",
    [
        (None, "--anchor is required: name the stem whose level is right, one of bass, drums, vocals"),
        ("piano", "--anchor: unknown stem 'piano'; use one of bass, drums, vocals"),
    ],
)
def test_missing_or_unknown_anchor(tmp_path, anchor, message):
    song = write(tmp_path / "song.wav", tone(2.0, 220))
    with pytest.raises(InputError) as err:
        open_session(song, anchor)
    assert str(err.value) == message


def test_anchor_stem_absent(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(2.0, 60))
    write(folder / "Guitar.wav", tone(2.0, 300))
    with pytest.raises(InputError) as err:
        open_session(folder, "vocals")
    assert str(err.value) == (
        f"{folder}: anchor stem 'vocals' not found: no file name matches it (found: drums <- drums.wav, "
        "other <- Guitar.wav); rename its file or pass --stem vocals=PATH"
    )


def test_no_audio_found_points_at_a_full_mix(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"no stem audio found"):
        open_session(folder, "drums")
    write(folder / "Final Mix.wav", tone(2.0, 60))
    with pytest.raises(InputError, match=r"to critique the full mix run: mixcritic critique .*Final Mix.wav"):
        open_session(folder, "drums")


def test_corrupt_file_is_named(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(2.0, 60))
    (folder / "bass.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"bass\.wav: cannot read audio"):
        open_session(folder, "drums")


def test_nan_samples_are_named(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(2.0, 60))
    bad = tone(2.0, 80)
    bad[100] = np.nan
    bad[200] = np.inf
    write(folder / "bass.wav", bad, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"bass\.wav: contains 2 NaN/Inf samples"):
        open_session(folder, "drums")


def test_under_one_second_is_refused(tmp_path):
    song = write(tmp_path / "short.wav", tone(0.5, 220))
    with pytest.raises(InputError) as err:
        open_session(song, "drums")
    assert str(err.value) == f"{song}: 0.50 s of audio is too short to critique (needs at least 1 s)"


def test_silent_anchor_is_refused(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", np.zeros(2 * RATE_HZ, dtype=np.float32))
    write(folder / "bass.wav", tone(2.0, 80))
    with pytest.raises(InputError, match=r"anchor stem 'drums' \(drums.wav\) is silent; choose another --anchor"):
        open_session(folder, "drums")


@pytest.mark.parametrize(
    "stems, message",
    [
        (["vocals"], "--stem 'vocals': expected NAME=PATH, e.g. --stem vocals=Lead.wav"),
        (["piano=x.wav"], "--stem: unknown stem 'piano'; use one of bass, drums, other, vocals"),
        (["vocals=missing.wav"], "--stem 'vocals=missing.wav': file missing.wav not found"),
    ],
)
def test_bad_stem_overrides(tmp_path, stems, message):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(2.0, 60))
    with pytest.raises(InputError) as err:
        open_session(folder, "drums", stems)
    assert str(err.value) == message


def test_stems_present_must_include_anchor(tmp_path):
    song = write(tmp_path / "song.wav", tone(2.0, 220))
    with pytest.raises(InputError, match="does not include the anchor stem 'vocals'"):
        open_session(song, "vocals", stems_present="bass,drums")


def test_digitally_silent_stem_is_not_present_and_said_per_file(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(3.0, 60))
    write(folder / "vocals.wav", tone(3.0, 440))
    write(folder / "bass.wav", np.zeros(3 * RATE_HZ, dtype=np.float32))
    session = open_session(folder, "drums")
    assert session.stems_present == ("drums", "vocals")
    assert list(session.audio) == ["drums", "vocals"]
    assert [f.path.name for f in session.files] == ["drums.wav", "vocals.wav"]
    assert {f.path.name: f.reason for f in session.ignored} == {
        "bass.wav": "digitally silent (every sample is zero): not judged and not listed as present"
    }


def test_one_silent_file_of_a_stem_leaves_the_other_file_judged(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(3.0, 60))
    write(folder / "vox.wav", tone(3.0, 440))
    write(folder / "vocal double.wav", np.zeros(3 * RATE_HZ, dtype=np.float32))
    session = open_session(folder, "drums")
    assert session.stems_present == ("drums", "vocals")
    assert [f.path.name for f in session.ignored] == ["vocal double.wav"]


@pytest.mark.parametrize("bass_s", [0.028, 3.4])
def test_truncated_stem_is_refused_naming_it(tmp_path, bass_s):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(7.0, 60))
    write(folder / "vocals.wav", tone(7.0, 440))
    bass = write(folder / "bass.wav", tone(bass_s, 80))
    with pytest.raises(InputError) as err:
        open_session(folder, "drums")
    assert str(err.value) == (
        f"{bass}: {bass_s:.3f} s long beside a 7.00 s stem, which looks like a truncated or broken export; "
        "export it again at full length, or pass --pad to pad it with silence"
    )


def test_pad_accepts_a_truncated_stem_deliberately(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write(folder / "drums.wav", tone(7.0, 60))
    write(folder / "bass.wav", tone(0.5, 80))
    session = open_session(folder, "drums", pad=True)
    assert session.num_samples == 7 * RATE_HZ
    assert {f.path.name: f.padded_s for f in session.files}["bass.wav"] == pytest.approx(6.5)


@pytest.mark.parametrize("anchor", ["other", "Other", "rest"])
def test_other_cannot_be_the_anchor_and_says_why(tmp_path, anchor):
    with pytest.raises(InputError) as err:
        open_session(tmp_path, anchor)
    assert str(err.value).startswith(f"--anchor {anchor}: 'other' cannot be the anchor: it is everything that is not")
    assert str(err.value).endswith("use one of bass, drums, vocals")
