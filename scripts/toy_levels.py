"""Print the per-stem gains (dB, against drums) that would fit toy songs best to the built-in critic's natural balance.

``toy._STEM_RMS_DBFS`` was set by adding these gains once; with the shipped levels the script
prints numbers near 0. Rerun it when the built-in critic or the toy generator changes:

    python scripts/toy_levels.py [--songs 24]

Method: each toy song (10 s) is cut into two 5 s windows; the band levels of its four stems
(the measured critic's features) are compared with the built-in model in its contrast space,
and the per-stem gains g minimising the Mahalanobis distance (generalised least squares) are
averaged over the windows.
"""

from __future__ import annotations

import argparse

import numpy as np


def best_gains_db(songs: int, first_seed: int = 1000) -> np.ndarray:
    """``(windows, 4)`` GLS gains per window, in ``labels.STEMS`` order, drums fixed at 0."""
    from mixcritic.audio import resample
    from mixcritic.critics.measured import load_builtin
    from mixcritic.critics.measured.features import stem_levels_db
    from mixcritic.critics.measured.model import helmert_basis
    from mixcritic.labels import MODEL_SAMPLE_RATE_HZ, STEMS
    from mixcritic.toy import TOY_RATE_HZ, make_toy_song

    critic = load_builtin()
    model, config = critic.model, critic.config
    basis = helmert_basis(len(STEMS) * model.bands)
    precision = np.linalg.inv(basis @ model.cov_db2 @ basis.T)
    gain_columns = basis @ np.kron(np.eye(len(STEMS)), np.ones((model.bands, 1)))  # a gain on one stem, all bands
    window = 5 * MODEL_SAMPLE_RATE_HZ
    rows = []
    for seed in range(first_seed, first_seed + songs):
        song = make_toy_song(seed, 10.0)
        mono = {k: resample(v.mean(axis=1).astype(np.float32), TOY_RATE_HZ, MODEL_SAMPLE_RATE_HZ) for k, v in song.items()}
        for start in (0, window):
            stems = {k: v[start : start + window] for k, v in mono.items()}
            levels = stem_levels_db(stems, STEMS, MODEL_SAMPLE_RATE_HZ, config.band_edges_hz, config.band_floor_db)
            if len(levels) < len(STEMS):
                continue
            residual = basis @ (np.concatenate([levels[s] for s in STEMS]) - model.mean_db)
            gains = -np.linalg.pinv(gain_columns.T @ precision @ gain_columns) @ gain_columns.T @ precision @ residual
            rows.append(gains - gains[STEMS.index("drums")])
    return np.array(rows)


def main() -> None:
    from mixcritic.labels import STEMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=24, help="toy songs to measure (two 5 s windows each)")
    gains = best_gains_db(parser.parse_args().songs)
    for index, stem in enumerate(STEMS):
        print(f"{stem:<7} mean {gains[:, index].mean():+.2f} dB  median {np.median(gains[:, index]):+.2f} dB  "
              f"sd {gains[:, index].std():.2f} dB  ({len(gains)} windows)")


if __name__ == "__main__":
    main()
