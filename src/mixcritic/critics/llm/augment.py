"""Training-only audio augmentation of the authors' published run: gain, noise at an SNR, DC offset.

Applied to a clip after loudness normalisation (before it, the normalisation would undo the
gain). Shapes: ``audio`` (samples,) float32 mono at 24 kHz. Note that MERT's own input scaling
(``do_normalize``: zero mean, unit variance per clip) removes a gain and a DC offset again before
the encoder sees the clip; the noise survives it.
"""

from __future__ import annotations

import numpy as np


def apply_augmentation(audio: np.ndarray, gain_db: float = 0.0, snr_db: float | None = None,
                       dc_offset: float = 0.0, noise: np.ndarray | None = None) -> np.ndarray:
    """``audio`` x gain, plus ``noise`` scaled to ``snr_db`` below the (gained) signal power, plus ``dc_offset``.

    ``noise``: (samples,) white noise of any scale (rescaled here); required when ``snr_db`` is set.
    A silent clip gets no noise (its SNR is undefined). Returns a new float32 array.
    """
    out = audio.astype(np.float64) * 10.0 ** (gain_db / 20.0)
    if snr_db is not None:
        if noise is None or noise.shape != audio.shape:
            raise ValueError("noise of the clip's shape is needed to add noise at an SNR")
        signal_power = float(np.mean(out**2))
        noise_power = float(np.mean(noise.astype(np.float64) ** 2))
        if signal_power > 0 and noise_power > 0:
            out = out + noise * np.sqrt(signal_power / noise_power / 10.0 ** (snr_db / 10.0))
    return (out + dc_offset).astype(np.float32)


def random_augmentation(audio: np.ndarray, rng: np.random.Generator, gain_db_max: float = 0.0,
                        snr_db_range: list | tuple | None = None, dc_offset_max: float = 0.0) -> np.ndarray:
    """One random draw: gain uniform in +-``gain_db_max`` dB, Gaussian noise at an SNR uniform in
    ``snr_db_range`` (None = no noise), DC offset uniform in +-``dc_offset_max``."""
    gain_db = float(rng.uniform(-gain_db_max, gain_db_max)) if gain_db_max > 0 else 0.0
    snr_db = noise = None
    if snr_db_range is not None:
        snr_db = float(rng.uniform(snr_db_range[0], snr_db_range[1]))
        noise = rng.standard_normal(audio.shape)
    dc = float(rng.uniform(-dc_offset_max, dc_offset_max)) if dc_offset_max > 0 else 0.0
    return apply_augmentation(audio, gain_db, snr_db, dc, noise)
