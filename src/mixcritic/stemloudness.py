"""BS.1770 loudness of any gain-weighted sum of stems, from per-stem K-weighted hop statistics.

K-weighting is linear, so the K-weighted mix of stems ``s_i`` with gains ``g_i`` is
``sum_i g_i K(s_i)``, and its energy over any interval is ``g^T G g`` with
``G[i, j] = sum_t K(s_i)[t] K(s_j)[t]`` over that interval. Keeping ``G`` for every 100 ms hop
(BS.1770's gating step; a 400 ms gating block is 4 hops) gives the exact integrated loudness of any
hop-aligned excerpt of any gain-weighted mix of the stems in microseconds, without touching the
audio. This makes gating (per-stem loudness per chunk) and loudness normalisation of rendered
mixes nearly free.

The filter coefficients and the gating follow pyloudnorm (ITU-R BS.1770-4) exactly; the only
difference is that the filters here run over the whole track, so an excerpt's first samples see
the preceding audio instead of a filter started from rest (a few hundredths of an LU at most).

Shapes: ``stems`` ``(n_stems, samples)`` float mono at ``rate_hz``; ``hop_gram``
``(hops, n_stems, n_stems)`` float64; ``hop_energy`` ``(hops,)`` float64 (sum of squares).
"""

from __future__ import annotations

import functools
import math

import numpy as np

HOP_S = 0.1
"""Gating step of BS.1770: blocks of 400 ms overlap by 75 %."""

BLOCK_HOPS = 4
"""Hops per 400 ms gating block."""

ABSOLUTE_GATE_LUFS = -70.0
"""BS.1770 absolute gate."""

RELATIVE_GATE_LU = -10.0
"""BS.1770 relative gate, below the absolutely-gated loudness."""


def hop_samples(rate_hz: int) -> int:
    """Samples per 100 ms hop; raises ValueError when the rate has no whole number of them."""
    samples = rate_hz * HOP_S
    if abs(samples - round(samples)) > 1e-9:
        raise ValueError(f"{rate_hz} Hz has no whole number of samples per {HOP_S} s hop")
    return int(round(samples))


@functools.lru_cache(maxsize=8)
def kweighting_sos(rate_hz: int) -> np.ndarray:
    """BS.1770 K-weighting (pyloudnorm's high shelf + high pass) as second-order sections ``(2, 6)``."""
    from pyloudnorm.iirfilter import IIRfilter

    shelf = IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, rate_hz, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, rate_hz, "high_pass")
    rows = []
    for stage in (shelf, high_pass):
        b = np.asarray(stage.b, dtype=np.float64) * stage.passband_gain
        a = np.asarray(stage.a, dtype=np.float64)
        rows.append(np.concatenate([b / a[0], a / a[0]]))
    return np.array(rows)


def hop_gram(stems: np.ndarray, rate_hz: int) -> np.ndarray:
    """K-weighted cross-energies of the stems per 100 ms hop: ``(hops, n_stems, n_stems)`` float64.

    ``stems``: ``(n_stems, samples)``. A trailing partial hop is ignored.
    """
    import scipy.signal

    hop = hop_samples(rate_hz)
    n_stems, samples = stems.shape
    hops = samples // hop
    weighted = scipy.signal.sosfilt(kweighting_sos(rate_hz), stems[:, : hops * hop], axis=-1)
    blocks = weighted.reshape(n_stems, hops, hop).transpose(1, 0, 2)
    return blocks @ blocks.transpose(0, 2, 1)


def hop_energy(gram: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """K-weighted energy per hop of the mix ``sum_i gains[i] * stems[i]``: ``(hops,)`` float64."""
    gains = np.asarray(gains, dtype=np.float64)
    return np.einsum("i,hij,j->h", gains, gram, gains)


def block_loudness_lufs(energy: np.ndarray, rate_hz: int) -> np.ndarray:
    """Loudness of each 400 ms gating block (hop 100 ms), LUFS; ``-inf`` for silent blocks."""
    hop = hop_samples(rate_hz)
    if energy.shape[0] < BLOCK_HOPS:
        raise ValueError(f"{energy.shape[0] * HOP_S:.1f} s is too short for a 400 ms gating block")
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    block_energy = cumulative[BLOCK_HOPS:] - cumulative[:-BLOCK_HOPS]
    mean_square = np.maximum(block_energy, 0.0) / (BLOCK_HOPS * hop)
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(mean_square)


def integrated_loudness_lufs(energy: np.ndarray, rate_hz: int) -> float:
    """Gated integrated loudness (BS.1770) of an excerpt given its per-hop K-weighted energy.

    Returns ``-inf`` when no block passes the absolute gate (silence).
    """
    loudness = block_loudness_lufs(energy, rate_hz)
    mean_square = 10.0 ** ((loudness + 0.691) / 10.0)
    above_absolute = loudness >= ABSOLUTE_GATE_LUFS
    if not above_absolute.any():
        return float("-inf")
    relative_gate = -0.691 + 10.0 * math.log10(mean_square[above_absolute].mean()) + RELATIVE_GATE_LU
    gated = (loudness > relative_gate) & (loudness > ABSOLUTE_GATE_LUFS)
    if not gated.any():
        return float("-inf")
    return float(-0.691 + 10.0 * math.log10(mean_square[gated].mean()))
