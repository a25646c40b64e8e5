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
import threading

import numpy as np

HOP_S = 0.1
"""Gating step of BS.1770: blocks of 400 ms overlap by 75 %."""

BLOCK_HOPS = 4
"""Hops per 400 ms gating block."""

ABSOLUTE_GATE_LUFS = -70.0
"""BS.1770 absolute gate."""

RELATIVE_GATE_LU = -10.0
"""BS.1770 relative gate, below the absolutely-gated loudness."""

DITHER = 1e-15
"""Amplitude of a Nyquist-rate (+d, -d, ...) signal added before K-weighting.

Digital silence drives IIR filters into denormal floats, which makes them ~8x slower. At
-300 dBFS the dither changes any loudness above the -70 LUFS gate by less than 1e-10 LU, and
digital silence still measures -inf (its blocks sit near -297 LUFS, below the absolute gate).
"""


def hop_samples(rate_hz: int) -> int:
    """Samples per 100 ms hop; raises ValueError when the rate has no whole number of them."""
    samples = rate_hz * HOP_S
    if abs(samples - round(samples)) > 1e-9:
        raise ValueError(f"{rate_hz} Hz has no whole number of samples per {HOP_S} s hop")
    return int(round(samples))


KWEIGHTING_STAGES: tuple[tuple[str, float, float, float], ...] = (
    ("high_shelf", 4.0, 1 / math.sqrt(2), 1500.0),
    ("high_pass", 0.0, 0.5, 38.0),
)
"""BS.1770 K-weighting as pyloudnorm builds it: (kind, gain dB, Q, centre Hz) per biquad stage."""


def biquad_coefficients(kind: str, gain_db: float, q: float, centre_hz: float, rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of an RBJ-cookbook biquad, exactly as ``pyloudnorm.iirfilter.IIRfilter`` designs it.

    Written out here so that loudness never imports pyloudnorm or scipy.signal (about a second of
    import time); ``tests/test_stemloudness.py`` checks the sections equal pyloudnorm's bitwise.
    """
    amplitude = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * centre_hz / rate_hz
    alpha = math.sin(w0) / (2.0 * q)
    cos_w0 = math.cos(w0)
    if kind == "high_shelf":
        root = 2.0 * math.sqrt(amplitude) * alpha
        b = [amplitude * ((amplitude + 1) + (amplitude - 1) * cos_w0 + root),
             -2.0 * amplitude * ((amplitude - 1) + (amplitude + 1) * cos_w0),
             amplitude * ((amplitude + 1) + (amplitude - 1) * cos_w0 - root)]
        a = [(amplitude + 1) - (amplitude - 1) * cos_w0 + root,
             2.0 * ((amplitude - 1) - (amplitude + 1) * cos_w0),
             (amplitude + 1) - (amplitude - 1) * cos_w0 - root]
    elif kind == "high_pass":
        b = [(1 + cos_w0) / 2.0, -(1 + cos_w0), (1 + cos_w0) / 2.0]
        a = [1 + alpha, -2.0 * cos_w0, 1 - alpha]
    else:
        raise ValueError(f"unknown biquad kind {kind!r}")
    return np.array(b) / a[0], np.array(a) / a[0]


@functools.lru_cache(maxsize=8)
def kweighting_sos(rate_hz: int) -> np.ndarray:
    """BS.1770 K-weighting (pyloudnorm's high shelf + high pass) as second-order sections ``(2, 6)``.

    Equal bitwise to the sections built from ``pyloudnorm.iirfilter.IIRfilter``."""
    return np.array([np.concatenate(biquad_coefficients(*stage, rate_hz)) for stage in KWEIGHTING_STAGES])


_KERNEL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _sosfilt_kernel():
    """scipy's compiled ``_sosfilt(sos, x, zi)`` kernel, loaded without running ``scipy.signal``'s
    package ``__init__`` (which imports scipy.stats, scipy.interpolate, ... : about 0.8 s, most of a
    ``critique`` run's import time). None when this scipy has no such extension module."""
    import sys

    with _KERNEL_LOCK:  # synth filters stems in threads; an extension module loads only once
        loaded = sys.modules.get("scipy.signal._sosfilt")
        if loaded is not None:
            return getattr(loaded, "_sosfilt", None)
        return _load_sosfilt_kernel()


def _load_sosfilt_kernel():
    """Load ``scipy/signal/_sosfilt.*.so`` under its own name and register it in ``sys.modules``,
    so that a later ``import scipy.signal`` reuses this module instead of loading it twice."""
    import importlib.machinery
    import importlib.util
    import sys
    from pathlib import Path

    try:
        import scipy

        folder = Path(scipy.__file__).parent / "signal"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_sosfilt{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader("scipy.signal._sosfilt", str(path))
                spec = importlib.util.spec_from_file_location("scipy.signal._sosfilt", path, loader=loader)
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                sys.modules.setdefault("scipy.signal._sosfilt", module)
                return module._sosfilt
    except (ImportError, AttributeError, OSError):
        return None
    return None


def sosfilt(sos: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfilt(sos, audio, axis=-1)`` from rest, bit-for-bit, without importing scipy.signal.

    ``audio`` ``(samples,)`` or ``(n, samples)``; computed in the result type of ``sos`` and
    ``audio`` (float64 sections on float32 audio filter in float64, as scipy does). Falls back to
    ``scipy.signal.sosfilt`` itself when scipy's compiled kernel cannot be loaded directly.
    """
    sos = np.asarray(sos)
    audio = np.asarray(audio)
    dtype = np.result_type(sos, audio)
    kernel = _sosfilt_kernel()
    if kernel is None or dtype.char not in "fd" or sos.ndim != 2 or sos.shape[1] != 6 or audio.ndim not in (1, 2):
        import scipy.signal

        return scipy.signal.sosfilt(sos, audio, axis=-1)
    shape = audio.shape
    rows = np.array(audio.reshape(-1, shape[-1]), dtype=dtype, order="C")  # a copy, filtered in place
    state = np.zeros((rows.shape[0], sos.shape[0], 2), dtype=dtype)
    kernel(np.array(sos, dtype=dtype, order="C"), rows, state)  # a copy: the kernel needs a writable buffer
    return rows.reshape(shape)


def kweighted(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """K-weighted copy (float32) of ``audio`` ``(samples,)`` or ``(n, samples)``, along the last axis.

    Filtered in float32 (25 % faster than float64; loudness from it differs by < 0.001 LU). A
    -300 dBFS Nyquist-rate dither (``DITHER``) is added first to keep the filters out of denormals.
    """
    sos = kweighting_sos(rate_hz).astype(np.float32)
    return sosfilt(sos, np.add(audio, _dither(audio.shape[-1]), dtype=np.float32))


_DITHER_CACHE = np.zeros(0, dtype=np.float32)


def _dither(samples: int) -> np.ndarray:
    """``(+DITHER, -DITHER, ...)`` float32 of length ``samples`` (a view of a cached, read-only array)."""
    global _DITHER_CACHE
    cached = _DITHER_CACHE
    if cached.shape[0] < samples:
        cached = np.full(max(samples, 2 * cached.shape[0]), DITHER, dtype=np.float32)
        cached[1::2] = -DITHER
        cached.flags.writeable = False
        _DITHER_CACHE = cached
    return cached[:samples]


def gram_from_kweighted(weighted, rate_hz: int) -> np.ndarray:
    """Per-hop cross-energies ``(hops, n, n)`` float64 of ``n`` K-weighted signals.

    ``weighted``: a sequence of ``(samples,)`` arrays (or an ``(n, samples)`` array), cut to the
    shortest; a trailing partial hop is ignored.
    """
    hop = hop_samples(rate_hz)
    samples = min(w.shape[0] for w in weighted)
    hops = samples // hop
    views = [w[: hops * hop].reshape(hops, hop) for w in weighted]
    gram = np.empty((hops, len(views), len(views)))
    for i, first in enumerate(views):
        for j in range(i, len(views)):
            gram[:, i, j] = gram[:, j, i] = np.einsum("hk,hk->h", first, views[j])
    return gram


def hop_gram(stems: np.ndarray, rate_hz: int) -> np.ndarray:
    """K-weighted cross-energies of the stems per 100 ms hop: ``(hops, n_stems, n_stems)`` float64.

    ``stems``: ``(n_stems, samples)``. A trailing partial hop is ignored.
    """
    return gram_from_kweighted([kweighted(row, rate_hz) for row in stems], rate_hz)


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
