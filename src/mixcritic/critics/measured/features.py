"""What the measured critic measures: each stem's level per frequency band, in dB.

A stem's band level is the mean power of its K-weighted spectrum (BS.1770's frequency weighting,
applied to short-time spectra) inside the band, over the whole segment, in dB. Power is linear in
the stem's squared gain, so a gain of ``g`` dB on a stem adds exactly ``g`` dB to every one of its
band levels (and nothing to the other stems'): the model can undo a hypothesised gain exactly.

A band where a stem has almost no energy would give a very negative, noisy level; it is floored
at ``band_floor_db`` below the stem's total level. The floor moves with the stem's gain, so the
exactness above still holds.

Shapes: ``audio`` ``(samples,)`` float32 mono at ``rate_hz``; levels ``(bands,)`` float64 dB.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from mixcritic.stemloudness import KWEIGHTING_STAGES, biquad_coefficients  # noqa: F401  (re-exported)

FRAME_SAMPLES = 2048
"""STFT frame length at 24 kHz (85 ms); Hann window."""

HOP_SAMPLES = 2048
"""STFT hop: frames do not overlap (half the FFT work of 50 % overlap; the mean power is as good)."""

SILENT_POWER = 1e-12
"""Mean power (about -120 dB re full scale) below which a stem counts as silent."""


def check_band_edges(band_edges_hz: Sequence[float], rate_hz: int) -> tuple[float, ...]:
    """Return ``band_edges_hz`` as floats; raise ValueError unless increasing and inside (0, rate/2]."""
    edges = tuple(float(e) for e in band_edges_hz)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0 or edges[-1] > rate_hz / 2:
        raise ValueError(f"band edges {edges} must be at least two increasing frequencies within 0..{rate_hz / 2:g} Hz")
    return edges


def kweighting_power_response(freqs_hz: np.ndarray, rate_hz: int) -> np.ndarray:
    """``|K(f)|^2`` of BS.1770's K-weighting at ``freqs_hz`` (float64), for audio at ``rate_hz``."""
    z_inverse = np.exp(-2j * np.pi * np.asarray(freqs_hz, dtype=np.float64) / rate_hz)
    response = np.ones_like(z_inverse)
    for stage in KWEIGHTING_STAGES:
        b, a = biquad_coefficients(*stage, rate_hz)
        response *= (b[0] + b[1] * z_inverse + b[2] * z_inverse**2) / (a[0] + a[1] * z_inverse + a[2] * z_inverse**2)
    return np.abs(response) ** 2


@functools.lru_cache(maxsize=16)
def band_weights(band_edges_hz: tuple[float, ...], rate_hz: int, frame_samples: int = FRAME_SAMPLES) -> np.ndarray:
    """``(bands, frame_samples // 2 + 1)`` float64: K-weighting power response masked to each band."""
    freqs_hz = np.fft.rfftfreq(frame_samples, 1.0 / rate_hz)
    power = kweighting_power_response(freqs_hz, rate_hz)
    rows = []
    for low, high in zip(band_edges_hz, band_edges_hz[1:]):
        rows.append(np.where((freqs_hz >= low) & (freqs_hz < high), power, 0.0))
    return np.array(rows)


@functools.lru_cache(maxsize=4)
def _window(frame_samples: int) -> np.ndarray:
    return np.hanning(frame_samples).astype(np.float32)


def mean_power_spectrum(audio: np.ndarray, frame_samples: int = FRAME_SAMPLES, hop_samples: int = HOP_SAMPLES) -> np.ndarray:
    """Mean power of the Hann-windowed short-time spectrum: ``(frame_samples // 2 + 1,)`` float64.

    ``audio`` shorter than one frame is zero-padded to one frame.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[0] < frame_samples:
        audio = np.pad(audio, (0, frame_samples - audio.shape[0]))
    frames = 1 + (audio.shape[0] - frame_samples) // hop_samples
    view = np.lib.stride_tricks.sliding_window_view(audio, frame_samples)[::hop_samples][:frames]
    spectrum = np.fft.rfft(view * _window(frame_samples), axis=1)
    power = spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2
    return power.mean(axis=0) / frame_samples


def band_levels_db(audio: np.ndarray, rate_hz: int, band_edges_hz: Sequence[float], band_floor_db: float) -> np.ndarray | None:
    """K-weighted level of ``audio`` in each band, dB: ``(bands,)`` float64; None when silent.

    Each band is floored at ``band_floor_db`` below the total over all bands.
    """
    return levels_from_spectrum_db(mean_power_spectrum(audio), rate_hz, band_edges_hz, band_floor_db)


def levels_from_spectrum_db(power_spectrum: np.ndarray, rate_hz: int, band_edges_hz: Sequence[float], band_floor_db: float) -> np.ndarray | None:
    """Band levels (dB) from a :func:`mean_power_spectrum`; None when silent. See :func:`band_levels_db`."""
    weights = band_weights(check_band_edges(band_edges_hz, rate_hz), int(rate_hz))
    power = weights @ power_spectrum
    total = float(power.sum())
    if not total > SILENT_POWER:
        return None
    floor = total * 10.0 ** (-band_floor_db / 10.0)
    return 10.0 * np.log10(np.maximum(power, floor))


def stem_levels_db(
    stems: dict[str, np.ndarray], names: Sequence[str], rate_hz: int, band_edges_hz: Sequence[float], band_floor_db: float
) -> dict[str, np.ndarray]:
    """Band levels of each named stem that is given and not silent: ``{stem: (bands,) dB}``."""
    levels = {}
    for name in names:
        if name in stems and stems[name] is not None:
            measured = band_levels_db(stems[name], rate_hz, band_edges_hz, band_floor_db)
            if measured is not None:
                levels[name] = measured
    return levels


def total_level_db(levels_db: np.ndarray) -> float:
    """Power sum of band levels, dB (the stem's K-weighted level over all bands)."""
    return 10.0 * math.log10(float(np.sum(10.0 ** (np.asarray(levels_db) / 10.0))))
