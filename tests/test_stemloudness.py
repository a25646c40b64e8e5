"""The K-weighting filter of stemloudness: scipy's results, without importing scipy.signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mixcritic import stemloudness
from mixcritic.stemloudness import kweighting_sos, sosfilt


@pytest.mark.parametrize("rate_hz", [16_000, 24_000, 44_100, 48_000])
def test_kweighting_sections_equal_pyloudnorms_bitwise(rate_hz):
    """The sections are written out (no pyloudnorm import); they must be pyloudnorm's exactly."""
    from pyloudnorm.iirfilter import IIRfilter

    stages = (IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate_hz, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, rate_hz, "high_pass"))
    expected = np.array([
        np.concatenate([np.asarray(s.b, dtype=np.float64) * s.passband_gain / s.a[0], np.asarray(s.a, dtype=np.float64) / s.a[0]])
        for s in stages
    ])
    assert np.array_equal(kweighting_sos(rate_hz), expected)


@pytest.mark.parametrize("sos_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(30_000,), (3, 20_000)])
def test_sosfilt_equals_scipys_on_random_audio(sos_dtype, shape):
    import scipy.signal

    audio = np.random.default_rng(7).standard_normal(shape).astype(np.float32) * np.float32(0.3)
    sos = kweighting_sos(24_000).astype(sos_dtype)
    expected = scipy.signal.sosfilt(sos, audio, axis=-1)
    got = sosfilt(sos, audio)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.array_equal(got, expected)  # the same compiled kernel: bit for bit
    assert np.array_equal(audio, np.random.default_rng(7).standard_normal(shape).astype(np.float32) * np.float32(0.3))


def test_sosfilt_falls_back_to_scipy_signal_when_the_kernel_is_unavailable(monkeypatch):
    import scipy.signal

    monkeypatch.setattr(stemloudness, "_sosfilt_kernel", lambda: None)
    audio = np.random.default_rng(8).standard_normal(5_000)
    assert np.array_equal(sosfilt(kweighting_sos(44_100), audio), scipy.signal.sosfilt(kweighting_sos(44_100), audio))


def test_critique_with_the_builtin_critic_never_imports_scipy_signal(tmp_path):
    """The whole `critique` command, in a fresh interpreter: the window gating's K-weighting must not
    pull in scipy.signal (and with it scipy.stats, scipy.interpolate: most of the command's time)."""
    from mixcritic.toy import TOY_RATE_HZ, make_toy_song

    for stem, audio in make_toy_song(3, 6.0).items():
        sf.write(str(tmp_path / f"{stem}.wav"), audio, TOY_RATE_HZ)
    code = (
        "import sys\n"
        "from mixcritic.cli import app\n"
        f"app(['critique', {str(tmp_path)!r}, '--anchor', 'drums', '--model', 'builtin', '--json'], standalone_mode=False)\n"
        "heavy = ('scipy.signal', 'scipy.stats', 'scipy.interpolate', 'pyloudnorm', 'torch', 'transformers')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["engine"] == "measured"
    assert "HEAVY []" in result.stderr
