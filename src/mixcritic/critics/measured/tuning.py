"""Cross-validation by song: how well the measured critic judges songs it was not fit on.

Songs are split into folds (leave-one-song-out up to ``MAX_FOLDS`` songs, else ``MAX_FOLDS``
folds of whole songs). For each fold the natural balance is fit on the other songs, and each
held-out chunk is judged on the full flaw grid of the paper's protocol: every anchor, every other
target stem, every category, with ``draws`` gains spread evenly over the category's range.
A flawed chunk's levels are its clean levels plus the gain on the target (exact, see
``features.py``), and the gain estimates are linear in the levels, so the whole grid costs a few
array operations per fold.

The posterior depends on the ``no_error`` prior only through a final weighting, so one pass
scores every candidate prior: :func:`tune_no_error_prior` picks the one with the best
cross-validated macro Both among those that call at least ``min_no_error_both`` of the balanced
mixes balanced.

The covariance's shrinkage is chosen on the same folds by a smoother criterion:
:func:`tune_shrinkage` keeps the intensity under which the held-out songs' clean levels are most
likely (predictive log-density). Few songs need a strongly structured covariance; many songs can
afford the sample covariance, so the intensity falls as songs are added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixcritic.critics.measured.model import CATEGORY_ORDER, category_log_likelihoods, linear_gain_estimator, posterior_arrays
from mixcritic.labels import GAIN_RANGE_DB, STEMS, TARGET_STEMS

MAX_FOLDS = 20
"""Leave-one-song-out up to this many songs; beyond it, this many folds of whole songs."""

PRIOR_GRID: tuple[float, ...] = tuple(round(0.1 + 0.025 * k, 3) for k in range(21))
"""Candidate no_error priors, 0.10 .. 0.60."""

SHRINKAGE_GRID: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
"""Candidate shrinkage intensities, 0.0 .. 1.0."""


@dataclass(frozen=True)
class GridCases:
    """Held-out judgements of the flaw grid, before the prior is applied."""

    log_likelihoods: np.ndarray
    """``(N, 2, 5)`` category log-likelihoods for the two candidate targets (``CATEGORY_ORDER``)."""
    category: np.ndarray
    """``(N,)`` index of the true category in ``CATEGORY_ORDER``."""
    target: np.ndarray
    """``(N,)`` 0 or 1: which of the two candidates is the true target."""
    song: np.ndarray
    """``(N,)`` index of the held-out song (sorted names)."""
    songs: int
    """Songs held out in turn."""


def song_folds(songs: Sequence[str]) -> list[list[str]]:
    """Deterministic folds of whole songs (sorted names dealt round-robin)."""
    names = sorted(set(songs))
    count = min(len(names), MAX_FOLDS)
    return [names[k::count] for k in range(count)]


def held_out_log_density(chunks: list, bands: int, shrinkage: float, min_variance_db2: float) -> float:
    """Mean over held-out songs (folds of :func:`song_folds`) of the predictive log-density (nats)
    of their clean chunks' level contrasts, under the balance fitted on the other songs."""
    from mixcritic.critics.measured.critic import complete_levels
    from mixcritic.critics.measured.model import LOG_2PI, fit_balance, helmert_basis

    levels, tracks = complete_levels(chunks)
    names = np.array(tracks)
    per_song = []
    for held_out in song_folds(tracks):
        train = ~np.isin(names, held_out)
        if len(set(names[train])) < 2:
            continue
        model = fit_balance(levels[train], list(names[train]), STEMS, bands, shrinkage, min_variance_db2)
        basis = helmert_basis(levels.shape[1])
        cov = basis @ model.cov_db2 @ basis.T
        _, log_det = np.linalg.slogdet(cov)
        for song in held_out:
            residual = (levels[names == song] - model.mean_db) @ basis.T
            mahalanobis = np.einsum("ij,ij->i", residual, np.linalg.solve(cov, residual.T).T)
            per_song.append(float(np.mean(-0.5 * (mahalanobis + log_det + len(cov) * LOG_2PI))))
    if not per_song:
        raise ValueError("cross-validation needs chunks with all four stems from at least three songs")
    return float(np.mean(per_song))


def tune_shrinkage(chunks: list, bands: int, min_variance_db2: float, grid: Sequence[float] = SHRINKAGE_GRID) -> tuple[float, list[dict]]:
    """The shrinkage under which held-out songs are most likely (ties: the larger, simpler one).
    Returns it and the table of ``{"shrinkage", "log_density"}``."""
    table = [{"shrinkage": k, "log_density": held_out_log_density(chunks, bands, k, min_variance_db2)} for k in grid]
    best = max(table, key=lambda row: (round(row["log_density"], 9), row["shrinkage"]))
    return best["shrinkage"], table


def grid_cases(chunks: list, config, draws: int = 4) -> GridCases:
    """Judge every held-out chunk (all four stems present) on the full flaw grid, fold by fold."""
    from mixcritic.critics.measured.critic import complete_levels, fit_from_chunks

    complete = [c for c in chunks if all(s in c.levels_db for s in STEMS)]
    names = sorted({c.track for c in complete})
    parts = []
    for held_out in song_folds([c.track for c in complete]):
        train = [c for c in complete if c.track not in held_out]
        test = [c for c in complete if c.track in held_out]
        if len({c.track for c in train}) < 2 or not test:
            continue
        levels, tracks = complete_levels(test)
        parts.append(flaw_grid_cases(fit_from_chunks(train, config), levels, np.array([names.index(t) for t in tracks]), draws))
    if not parts:
        raise ValueError("cross-validation needs chunks with all four stems from at least three songs")
    return GridCases(*(np.concatenate([getattr(p, field) for p in parts]) for field in ("log_likelihoods", "category", "target", "song")),
                     len(names))


def flaw_grid_cases(model, levels: np.ndarray, song: np.ndarray, draws: int = 4) -> GridCases:
    """Judge clean chunks' stacked levels ``(chunks, dims)`` under a fitted balance on the paper's full
    flaw grid: every anchor, each other target stem, every category, ``draws`` gains spread evenly
    over its range. ``song``: each chunk's song index (``GridCases.songs`` is left 0)."""
    log_likelihoods, categories, targets, song_index = [], [], [], []
    for anchor in TARGET_STEMS:
        candidates = [s for s in TARGET_STEMS if s != anchor]
        weights, precision, index = linear_gain_estimator(model, STEMS, candidates)
        base = (levels - model.mean_db[index]) @ weights.T  # (chunks, 2)
        for which, target in enumerate(candidates):
            shift = weights[:, model.indices([target])].sum(axis=1)  # (2,): d estimate / d gain on target
            for category_index, category in enumerate(CATEGORY_ORDER):
                low, high = GAIN_RANGE_DB[category]
                gains = low + (np.arange(draws) + 0.5) / draws * (high - low)
                estimates = base[:, None, :] + gains[None, :, None] * shift[None, None, :]  # (chunks, draws, 2)
                estimates = estimates.reshape(-1, len(candidates))
                log_likelihoods.append(category_log_likelihoods(estimates, precision[None, :]))
                categories.append(np.full(estimates.shape[0], category_index))
                targets.append(np.full(estimates.shape[0], which))
                song_index.append(np.repeat(song, draws))
    return GridCases(np.concatenate(log_likelihoods), np.concatenate(categories), np.concatenate(targets),
                     np.concatenate(song_index), 0)


def grid_scores(cases: GridCases, no_error_prior: float) -> dict:
    """Macro Both over the five categories, Both per category, and magnitude given Both (macro over
    the four flawed categories), with the definitions of :mod:`mixcritic.metrics`."""
    both, predicted = _answers(cases, no_error_prior)
    per_category = {name: float(both[cases.category == k].mean()) for k, name in enumerate(CATEGORY_ORDER)}
    per_magnitude = []  # macro over the flawed categories, as metrics.by_category does
    for k in range(1, len(CATEGORY_ORDER)):
        given_both = both & (cases.category == k)
        if given_both.any():
            per_magnitude.append(float((predicted[given_both] == k).mean()))
    magnitude = float(np.mean(per_magnitude)) if per_magnitude else None
    return {
        "macro_both": float(np.mean(list(per_category.values()))),
        "no_error_both": per_category["no_error"],
        "both_per_category": per_category,
        "magnitude_given_both": magnitude,
    }


def _answers(cases: GridCases, no_error_prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Per case: Both correct, and the answered category index (as ``critic.decide`` answers)."""
    no_error, flaws = posterior_arrays(cases.log_likelihoods, no_error_prior)
    # options: no_error, then per target (increase = quiet + very_quiet, decrease = loud + very_loud)
    increase = flaws[:, :, 0] + flaws[:, :, 1]
    decrease = flaws[:, :, 2] + flaws[:, :, 3]
    options = np.column_stack([no_error, increase[:, 0], decrease[:, 0], increase[:, 1], decrease[:, 1]])
    choice = options.argmax(axis=1)
    flawed = cases.category > 0
    true_direction = np.where(cases.category <= 2, 0, 1)  # CATEGORY_ORDER: 1,2 quiet side; 3,4 loud side
    true_option = np.where(flawed, 1 + 2 * cases.target + true_direction, 0)
    both = choice == true_option
    # magnitude: the likelier category of the chosen direction (very_quiet|quiet, loud|very_loud)
    chosen_target = np.clip((choice - 1) // 2, 0, 1)
    rows = np.arange(len(choice))
    pair = flaws[rows, chosen_target]  # (N, 4)
    predicted = np.where(choice % 2 == 1, np.where(pair[:, 0] > pair[:, 1], 1, 2), np.where(pair[:, 3] > pair[:, 2], 4, 3))
    return both, predicted


def per_song_macro_both(cases: GridCases, no_error_prior: float) -> np.ndarray:
    """Macro Both (mean over the five categories) of each held-out song: ``(songs,)``."""
    both, _ = _answers(cases, no_error_prior)
    out = np.zeros(cases.songs)
    for song in range(cases.songs):
        mine = cases.song == song
        out[song] = np.mean([both[mine & (cases.category == k)].mean() for k in range(len(CATEGORY_ORDER))])
    return out


def tune_no_error_prior(cases: GridCases, min_no_error_both: float, grid: Sequence[float] = PRIOR_GRID) -> tuple[float, list[dict]]:
    """The prior with the best cross-validated macro Both among those reaching ``min_no_error_both``
    no_error Both (ties: the smaller prior); if none does, the one with the highest no_error Both.
    Returns it and the score table."""
    table = [{"no_error_prior": p, **grid_scores(cases, p)} for p in grid]
    reaching = [row for row in table if row["no_error_both"] >= min_no_error_both]
    if reaching:
        best = max(reaching, key=lambda row: (round(row["macro_both"], 9), -row["no_error_prior"]))
    else:
        best = max(table, key=lambda row: (round(row["no_error_both"], 9), -row["no_error_prior"]))
    return best["no_error_prior"], table
