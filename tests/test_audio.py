import numpy as np
import pytest
import soundfile as sf

from mixcritic import audio
from mixcritic.errors import AudioError, SilentAudioError


def test_gain_db_scales_amplitude_exactly(sine_24k):
    out = audio.apply_gain_db(sine_24k, 6.0)
    assert out.dtype == np.float32
    ratio = np.max(np.abs(out)) / np.max(np.abs(sine_24k))
    assert ratio == pytest.approx(1.99526, abs=1e-4)
    assert audio.amplitude_to_db(audio.db_to_amplitude(-7.5)) == pytest.approx(-7.5)


def test_loudness_changes_by_applied_gain(sine_24k):
    before = audio.loudness_lufs(sine_24k, 24_000)
    after = audio.loudness_lufs(audio.apply_gain_db(sine_24k, -9.0), 24_000)
    assert after - before == pytest.approx(-9.0, abs=0.01)


def test_normalize_hits_target(sine_24k):
    out = audio.normalize_loudness(sine_24k, 24_000, -23.0)
    assert audio.loudness_lufs(out, 24_000) == pytest.approx(-23.0, abs=0.01)


def test_loudness_guards():
    with pytest.raises(AudioError, match="too short"):
        audio.loudness_lufs(np.ones(1000, np.float32) * 0.1, 24_000)
    silent = np.zeros(24_000, np.float32)
    assert audio.loudness_lufs(silent, 24_000) == float("-inf")
    with pytest.raises(SilentAudioError):
        audio.normalize_loudness(silent, 24_000, -23.0)
    nan = np.full(24_000, 0.1, np.float32)
    nan[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        audio.loudness_lufs(nan, 24_000, name="x.wav")


def test_to_mono_and_resample():
    stereo = np.stack([np.ones(10, np.float32), np.zeros(10, np.float32)], axis=1)
    np.testing.assert_array_equal(audio.to_mono(stereo), np.full(10, 0.5, np.float32))
    t = np.arange(44_100) / 44_100
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    y = audio.resample(x, 44_100, 24_000)
    assert y.shape == (24_000,)
    # a 1 kHz tone keeps its RMS through resampling
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=1e-3)


def test_read_audio_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        audio.read_audio(tmp_path / "missing.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioError, match="corrupt.wav: cannot read audio"):
        audio.read_audio(bad)
    nan_file = tmp_path / "nan.wav"
    data = np.zeros((100, 2), np.float32)
    data[3, 1] = np.inf
    sf.write(nan_file, data, 44_100, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: contains 1 NaN/Inf"):
        audio.read_audio(nan_file)
    ok = tmp_path / "ok.flac"
    sf.write(ok, np.full((200, 2), 0.25, np.float32), 48_000)
    x, rate = audio.read_audio(ok)
    assert rate == 48_000 and x.shape == (200, 2)
