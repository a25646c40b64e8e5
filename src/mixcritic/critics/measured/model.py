"""Natural balance as a Gaussian over stem levels, and the posterior over gain-flaw hypotheses.

**Features.** ``y`` stacks the band levels (dB, :mod:`.features`) of the stems in ``STEMS`` order:
``y[s * bands + b]``. Only differences between levels matter (the session's playback level is
arbitrary), so the model lives in the *contrast space* of ``y``: ``x = C y`` with ``C`` an
orthonormal basis of the vectors orthogonal to all-ones (a Helmert matrix). A common gain on
every stem leaves ``x`` unchanged.

**Natural balance.** On unflawed material ``x ~ N(C mu, C Sigma C^T)``. ``Sigma`` is a shrinkage
estimate (see :func:`fit_balance`). A stem that is absent is marginalised out: the Gaussian of
the remaining entries is the same formula on the sub-vector, with the sub-vector's own basis.

**A hypothesis** ``(t, category)`` says that stem ``t`` was scaled by ``g`` dB, ``g`` uniform in
the category's range (``labels.GAIN_RANGE_DB``). The gain adds ``g`` to all of ``t``'s entries of
``y``: ``x = x_nat + g d_t``, ``d_t = C e_t``. With ``r = x - C mu``, ``A_t = d_t^T S^-1 d_t``
(the precision of the gain estimate) and ``g_t = d_t^T S^-1 r / A_t`` (the gain the levels point
to, in dB), the likelihood integrated over the range ``[lo, hi]`` is, up to a factor shared by
all hypotheses::

    p(x | t, lo..hi) ~ exp(A_t g_t^2 / 2) sqrt(2 pi / A_t) [Phi((hi - g_t) sqrt(A_t)) - Phi((lo - g_t) sqrt(A_t))] / (hi - lo)

``no_error`` puts a -3..+3 dB gain on one of the candidate targets (each equally likely). The prior
gives ``no_error`` probability ``no_error_prior`` and shares the rest equally among the flawed
hypotheses (the synthesised data's categories are balanced). Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixcritic.labels import GAIN_RANGE_DB, STEMS, Label

FLAW_CATEGORIES: tuple[str, ...] = ("very_quiet", "quiet", "loud", "very_loud")
"""Categories that carry a gain flaw, in order of gain."""

LOG_2PI = math.log(2.0 * math.pi)


@functools.lru_cache(maxsize=64)
def helmert_basis(n: int) -> np.ndarray:
    """``(n - 1, n)`` orthonormal rows, each orthogonal to all-ones (``n >= 2``)."""
    basis = np.zeros((n - 1, n))
    for k in range(1, n):
        basis[k - 1, :k] = 1.0
        basis[k - 1, k] = -float(k)
        basis[k - 1] /= math.sqrt(k * (k + 1))
    basis.flags.writeable = False
    return basis


def centering_projector(n: int) -> np.ndarray:
    """``I - 11^T / n``: removes the mean of an ``n``-vector."""
    return np.eye(n) - np.full((n, n), 1.0 / n)


@dataclass(frozen=True)
class BalanceModel:
    """The fitted natural balance: mean and covariance of stacked band levels (dB), up to a common shift."""

    stems: tuple[str, ...]
    """Stem order of the stacked vector (``labels.STEMS``)."""
    bands: int
    """Band levels per stem."""
    mean_db: np.ndarray
    """``(len(stems) * bands,)`` mean levels, centred (their mean is 0)."""
    cov_db2: np.ndarray
    """``(len(stems) * bands,) * 2`` predictive covariance for an unseen song, centred (rows sum to 0)."""

    def indices(self, stems: Sequence[str]) -> np.ndarray:
        """Positions in the stacked vector of all bands of ``stems`` (in the given order)."""
        return np.array([self.stems.index(s) * self.bands + b for s in stems for b in range(self.bands)], dtype=np.int64)


@dataclass(frozen=True)
class GainEvidence:
    """What the levels say about a gain on one target stem."""

    gain_db: float
    """The gain (dB) that best explains the deviation from natural balance; + = too loud."""
    precision: float
    """Inverse variance of ``gain_db`` (1/dB^2) under the model."""


def gain_evidence(model: BalanceModel, levels_db: dict[str, np.ndarray], targets: Sequence[str]) -> dict[str, GainEvidence]:
    """Gain estimate and its precision for each target, from the levels of the stems in ``levels_db``.

    ``levels_db``: ``{stem: (bands,) dB}`` for the stems present (at least two). Targets not in it
    are skipped.
    """
    present = [s for s in model.stems if s in levels_db]
    if len(present) < 2:
        return {}
    index = model.indices(present)
    basis = helmert_basis(len(index))
    y = np.concatenate([np.asarray(levels_db[s], dtype=np.float64) for s in present])
    residual = basis @ (y - model.mean_db[index])
    cov = basis @ model.cov_db2[np.ix_(index, index)] @ basis.T
    solve = np.linalg.solve(cov, np.column_stack([residual] + [basis @ _indicator(present, t, model.bands) for t in targets if t in present]))
    weighted_residual = solve[:, 0]
    evidence = {}
    for column, target in enumerate(t for t in targets if t in present):
        direction = basis @ _indicator(present, target, model.bands)
        precision = float(direction @ solve[:, column + 1])
        evidence[target] = GainEvidence(float(direction @ weighted_residual) / precision, precision)
    return evidence


def _indicator(present: Sequence[str], stem: str, bands: int) -> np.ndarray:
    out = np.zeros(len(present) * bands)
    start = list(present).index(stem) * bands
    out[start : start + bands] = 1.0
    return out


def log_uniform_gain_likelihood(evidence: GainEvidence, low_db: float, high_db: float) -> float:
    """log of the likelihood integrated over a gain uniform in ``[low_db, high_db]`` (shared terms dropped)."""
    from scipy.special import log_ndtr

    root = math.sqrt(evidence.precision)
    upper = (high_db - evidence.gain_db) * root
    lower = (low_db - evidence.gain_db) * root
    if lower > 0:  # both tails on the right: Phi(u) - Phi(l) = Phi(-l) - Phi(-u), computed stably
        upper, lower = -lower, -upper
    log_mass = float(log_ndtr(upper)) + math.log1p(-math.exp(min(float(log_ndtr(lower)) - float(log_ndtr(upper)), -1e-300)))
    return 0.5 * evidence.precision * evidence.gain_db**2 + 0.5 * (LOG_2PI - math.log(evidence.precision)) + log_mass - math.log(high_db - low_db)


def hypothesis_posterior(evidence: dict[str, GainEvidence], no_error_prior: float) -> dict[Label, float]:
    """Posterior over ``no_error`` and every (category, target) in ``evidence``; sums to 1.

    With no candidate target, everything goes to ``no_error``.
    """
    if not evidence:
        return {Label("no_error"): 1.0}
    targets = list(evidence)
    low, high = GAIN_RANGE_DB["no_error"]
    log_scores = {Label("no_error"): math.log(no_error_prior) + _log_mean_exp([log_uniform_gain_likelihood(evidence[t], low, high) for t in targets])}
    flaw_log_prior = math.log((1.0 - no_error_prior) / (len(FLAW_CATEGORIES) * len(targets)))
    for target in targets:
        for category in FLAW_CATEGORIES:
            low, high = GAIN_RANGE_DB[category]
            log_scores[Label.for_flaw(category, target)] = flaw_log_prior + log_uniform_gain_likelihood(evidence[target], low, high)
    top = max(log_scores.values())
    weights = {label: math.exp(score - top) for label, score in log_scores.items()}
    total = sum(weights.values())
    return {label: weight / total for label, weight in weights.items()}


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def decide(posterior: dict[Label, float]) -> tuple[Label, float]:
    """The answer that maximises the chance of naming the right stem and direction, and that chance.

    Candidates are ``no_error`` and each (stem, direction); a direction's probability is the sum of
    its two categories. The answer's category is the likelier of the two.
    """
    options: dict[tuple[str | None, str | None], float] = {}
    for label, probability in posterior.items():
        key = (label.stem, label.direction)
        options[key] = options.get(key, 0.0) + probability
    best_key = max(sorted(options, key=str), key=lambda key: options[key])
    members = [label for label in posterior if (label.stem, label.direction) == best_key]
    answer = max(sorted(members, key=lambda label: label.category), key=lambda label: posterior[label])
    return answer, options[best_key]


# ---------------------------------------------------------------------------------------------
# Fitting


def fit_balance(
    levels: np.ndarray, tracks: Sequence[str], stems: tuple[str, ...], bands: int, shrinkage: float, min_variance_db2: float
) -> BalanceModel:
    """Fit the natural balance from unflawed chunks.

    ``levels``: ``(chunks, len(stems) * bands)`` dB, every stem present; ``tracks``: the song of
    each chunk. Each song weighs the same however many chunks it has. The covariance is the
    weighted sample covariance shrunk by ``shrinkage`` towards a two-parameter target (a per-stem
    offset shared by its bands, plus independent band noise), inflated by ``1 + 1/songs`` for the
    uncertainty of the mean, plus ``min_variance_db2`` per entry.
    """
    levels = np.asarray(levels, dtype=np.float64)
    dims = len(stems) * bands
    if levels.ndim != 2 or levels.shape[1] != dims:
        raise ValueError(f"levels must be (chunks, {dims}); got {levels.shape}")
    names = sorted(set(tracks))
    if len(names) < 2:
        raise ValueError("need chunks from at least two songs to fit a natural balance")
    counts = {name: list(tracks).count(name) for name in names}
    weights = np.array([1.0 / counts[t] for t in tracks]) / len(names)
    centring = centering_projector(dims)
    centred = levels @ centring
    mean = weights @ centred
    deviations = centred - mean
    sample_cov = (deviations * weights[:, None]).T @ deviations * len(names) / (len(names) - 1)
    target = centring @ structured_target(sample_cov, centring, len(stems), bands) @ centring
    cov = (1.0 - shrinkage) * sample_cov + shrinkage * target
    cov = cov * (1.0 + 1.0 / len(names)) + min_variance_db2 * centring
    return BalanceModel(tuple(stems), bands, mean, 0.5 * (cov + cov.T))


def structured_target(sample_cov: np.ndarray, centring: np.ndarray, stems: int, bands: int) -> np.ndarray:
    """``a K + b I`` (``K``: ones within each stem's block) fitted to ``sample_cov`` by least squares
    after centring; ``a, b >= 0``. The uncentred matrix is returned."""
    block = np.kron(np.eye(stems), np.ones((bands, bands)))
    design = np.column_stack([(centring @ block @ centring).ravel(), centring.ravel()])
    (a, b), *_ = np.linalg.lstsq(design, sample_cov.ravel(), rcond=None)
    if bands == 1:  # K == I: only a + b is identified
        a, b = 0.0, a + b
    return max(a, 0.0) * block + max(b, 1e-6) * np.eye(stems * bands)
