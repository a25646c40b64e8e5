"""The measured critic: exact level measurement, the posterior, fit/save/load, the built-in fit,
flaws found on toy and real stems, calibration metrics, and no torch on its path."""

from __future__ import annotations


import pytest

from mixcritic import metrics


# ----------------------------------------------------------------------------------------------
# Calibration metrics, against a hand-computed case


def test_reliability_table_and_ece_hand_computed():
    # bins of width 0.5: [0, 0.5) holds 0.2, 0.4 (one right); [0.5, 1] holds 0.6, 0.8, 1.0 (two right)
    confidences = [0.2, 0.4, 0.6, 0.8, 1.0]
    correct = [False, True, True, False, True]
    table = metrics.reliability_table(confidences, correct, bins=2)
    assert [row["count"] for row in table] == [2, 3]
    assert table[0]["mean_confidence"] == pytest.approx(0.3) and table[0]["accuracy"] == pytest.approx(0.5)
    assert table[1]["mean_confidence"] == pytest.approx(0.8) and table[1]["accuracy"] == pytest.approx(2 / 3)
    # ECE = 2/5 * |0.5 - 0.3| + 3/5 * |2/3 - 0.8| = 0.08 + 0.08
    assert metrics.expected_calibration_error(confidences, correct, bins=2) == pytest.approx(0.16)


def test_calibration_edge_cases():
    assert metrics.expected_calibration_error([], []) is None
    table = metrics.reliability_table([1.0, 0.05], [True, True], bins=10)
    assert table[9]["count"] == 1 and table[0]["count"] == 1 and table[5]["count"] == 0 and table[5]["accuracy"] is None
    assert metrics.expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="outside"):
        metrics.reliability_table([1.5], [True])
    with pytest.raises(ValueError, match="correctness"):
        metrics.reliability_table([0.5], [])


# ----------------------------------------------------------------------------------------------
# The measured critic

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mixcritic.critics import Segment  # noqa: E402
from mixcritic.critics.measured import (  # noqa: E402
    MeasuredConfig,
    fit_measured,
    is_measured_folder,
    load_builtin,
    load_measured,
    save_measured,
)
from mixcritic.critics.measured.critic import BAND_CHOICES  # noqa: E402
from mixcritic.critics.measured.features import band_levels_db  # noqa: E402
from mixcritic.critics.measured.model import BalanceModel, centering_projector, gain_evidence  # noqa: E402
from mixcritic.errors import ModelError  # noqa: E402
from mixcritic.labels import STEMS, Label  # noqa: E402

RATE = 24_000
from conftest import shared_dir  # noqa: E402 - $MIXCRITIC_SHARED or ../shared, as every real-music test
MUSDB7 = shared_dir() / "musdb7-cc"
needs_musdb7 = pytest.mark.skipif(not MUSDB7.is_dir(), reason=f"real-music fixture {MUSDB7} is absent (set MIXCRITIC_SHARED)")


def noise_stems(seed: int = 0, seconds: float = 3.0) -> dict[str, np.ndarray]:
    """Four noise stems with different spectra (24 kHz mono float32)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    out = {}
    for k, stem in enumerate(STEMS):
        white = rng.standard_normal(samples).astype(np.float32)
        kernel = np.ones(1 + 4 * k, dtype=np.float32) / (1 + 4 * k)  # duller with k
        out[stem] = (0.05 * np.convolve(white, kernel, mode="same")).astype(np.float32)
    return out


def flawed(stems: dict[str, np.ndarray], stem: str, gain_db: float) -> dict[str, np.ndarray]:
    out = dict(stems)
    out[stem] = (stems[stem] * np.float32(10 ** (gain_db / 20))).astype(np.float32)
    return out


def segment(stems: dict[str, np.ndarray], anchor: str = "drums") -> Segment:
    return Segment(None, stems, anchor, "check the balance", tuple(s for s in STEMS if s in stems))


@pytest.mark.parametrize("gain_db", [6.0, -9.0])
def test_a_gain_moves_every_band_level_by_exactly_that_gain(gain_db):
    audio = noise_stems()["bass"]
    edges = (20.0, 150.0, 500.0, 2000.0, 6000.0, 12000.0)
    before = band_levels_db(audio, RATE, edges, band_floor_db=40.0)
    after = band_levels_db(audio * np.float32(10 ** (gain_db / 20)), RATE, edges, band_floor_db=40.0)
    np.testing.assert_allclose(after - before, gain_db, atol=1e-4)
    assert band_levels_db(np.zeros(RATE, dtype=np.float32), RATE, edges, 40.0) is None


def test_gain_evidence_recovers_an_injected_gain_exactly():
    bands = 2
    dims = len(STEMS) * bands
    model = BalanceModel(STEMS, bands, np.zeros(dims), 4.0 * centering_projector(dims) + 0.1 * np.eye(dims))
    levels = {s: np.zeros(bands) for s in STEMS}
    levels["bass"] = levels["bass"] + 9.0  # +9 dB on every bass band, all else at the natural balance
    evidence = gain_evidence(model, levels, ["bass", "vocals"])
    assert evidence["bass"].gain_db == pytest.approx(9.0, abs=1e-9)
    assert evidence["bass"].precision > 0
    # a common gain on every stem changes nothing
    shifted = gain_evidence(model, {s: v + 20.0 for s, v in levels.items()}, ["bass", "vocals"])
    assert shifted["bass"].gain_db == pytest.approx(9.0, abs=1e-9)


def test_builtin_probabilities_are_a_distribution_and_confidence_is_in_unit_interval():
    critic = load_builtin()
    assert critic.engine == "measured" and critic.needs_stems
    assert critic.settings["engine"] == "measured" and critic.settings["sample_rate_hz"] == 24_000
    assert "12 real songs" in critic.describe()
    for stems in (noise_stems(1), flawed(noise_stems(2), "vocals", -12.0), {k: v for k, v in noise_stems(3).items() if k != "other"}):
        probabilities = critic.probabilities(segment(stems))
        targets = [s for s in ("bass", "vocals") if s in stems]
        assert len(probabilities) == 1 + 4 * len(targets)  # no_error + 4 categories per candidate stem
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(label.stem != "drums" for label in probabilities)  # never the anchor
        judgement = critic.judge([segment(stems)])[0]
        assert 0.0 <= judgement.confidence <= 1.0
        assert judgement.probabilities["no_error"] == pytest.approx(probabilities[Label("no_error")])
        assert judgement.probabilities["answer"] == pytest.approx(probabilities[judgement.label])
        assert judgement.text


def test_missing_stems_are_an_error_a_person_can_act_on():
    with pytest.raises(ModelError, match="separate stems"):
        load_builtin().probabilities(Segment(np.zeros(RATE, dtype=np.float32), None, "drums", "x"))


# ---- fitted on real songs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def musdb7_data(tmp_path_factory):
    if not MUSDB7.is_dir():
        pytest.skip(f"real-music fixture {MUSDB7} is absent (set MIXCRITIC_SHARED)")
    from mixcritic.synthesis import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("musdb7") / "data"
    synthesize(MUSDB7, out, SynthConfig(segment_s=5.0, valid_fraction=0.0), show_progress=False)
    return out


@pytest.fixture(scope="module")
def train_critic(musdb7_data):
    return fit_measured(musdb7_data, "train")


@needs_musdb7
def test_fit_save_reload_round_trip_gives_identical_probabilities(musdb7_data, train_critic, tmp_path):
    from mixcritic.critics import load_critic, model_folder
    from mixcritic.dataset import open_dataset

    folder = save_measured(train_critic, tmp_path / "run")
    assert folder == tmp_path / "run" / "model" and (folder / "COMPLETE").is_file()
    stored = json.loads((folder / "mixcritic.json").read_text())
    assert stored["engine"] == "measured" and stored["fit"]["songs"] == 8
    assert sorted(p.name for p in folder.iterdir()) == ["COMPLETE", "mixcritic.json"]  # JSON only, no pickle
    assert is_measured_folder(folder) and model_folder(tmp_path / "run") == folder
    assert load_critic(tmp_path / "run").settings == train_critic.settings
    reloaded = load_measured(folder)
    assert load_measured(tmp_path / "run").settings == reloaded.settings == train_critic.settings
    dataset = open_dataset(musdb7_data)
    for record in dataset.records("test")[:10]:
        seg = Segment(None, dataset.render_stems(record), record["anchor_stem"], record["instruction"], tuple(record["stems_present"]))
        assert reloaded.probabilities(seg) == train_critic.probabilities(seg)
        assert reloaded.judge([seg]) == train_critic.judge([seg])


@needs_musdb7
def test_fit_tunes_the_no_error_prior_by_cross_validation(train_critic):
    cv = train_critic.fit_summary["cross_validation"]
    assert cv["prior_tuned"] and cv["shrinkage_tuned"] and cv["songs"] == 8 and cv["folds"] == 8
    assert cv["shrinkage"] == train_critic.config.shrinkage and 0.0 <= cv["shrinkage"] <= 1.0
    assert 0.1 <= train_critic.no_error_prior <= 0.6 and cv["no_error_prior"] == train_critic.no_error_prior
    assert cv["no_error_both"] >= train_critic.config.min_no_error_both
    # the band layout is chosen by the same CV; on 8 songs a per-band covariance loses to broadband
    assert set(cv["band_layouts"]) == set(BAND_CHOICES) and cv["band_layout"] == "broadband"
    assert train_critic.config.band_edges_hz == BAND_CHOICES["broadband"] and train_critic.model.bands == 1
    assert cv["macro_both"] == max(row["macro_both"] for row in cv["band_layouts"].values())


def tilted_songs(songs: int, seed: int = 0, tilt_sd_db: float = 6.0) -> list:
    """Measured-critic chunks of synthetic songs whose band levels (5-band layout, dB) are known exactly.

    Each stem has one dominant band (+15 dB), a per-song offset (SD 2.5 dB) and band noise (SD 1 dB);
    each song also has a spectral tilt shared by all its stems (SD ``tilt_sd_db`` per band, its
    "mastering EQ"). Broadband levels inherit the tilt through each stem's dominant band, per-band
    contrasts cancel it: here per-band levels carry information that broadband loudness loses.
    """
    from mixcritic.critics.measured.critic import Chunk, with_bands
    from mixcritic.critics.measured.features import band_weights

    weights = band_weights(BAND_CHOICES["5 bands"], RATE)  # (5, bins): K-weighting inside each band
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 3.0, (4, 5))
    base[np.arange(4), [0, 2, 3, 1]] += 15.0
    broadband = MeasuredConfig(band_edges_hz=BAND_CHOICES["broadband"])
    chunks = []
    for k in range(songs):
        levels = base + rng.normal(0, 2.5, (4, 1)) + rng.normal(0, tilt_sd_db, (1, 5)) + rng.normal(0, 1.0, (4, 5))
        spectra = {}
        for s, stem in enumerate(STEMS):  # flat inside each band, scaled so the K-weighted band power is 10^(level/10)
            spectra[stem] = sum(np.where(w > 0, 10 ** (level / 10) / w.sum(), 0.0) for w, level in zip(weights, levels[s]))
        chunks.append(with_bands(Chunk(f"song {k:02d}", 0.0, {}, spectra), broadband))
    return chunks


def test_the_band_layout_rule_picks_bands_when_enough_songs_show_they_pay():
    """On musdb7-cc broadband wins (above); the same rule must choose per-band levels for a user whose
    songs make them pay, or a larger data set could never get the richer model."""
    from mixcritic.critics.measured.critic import tuned_config

    resolved, report = tuned_config(tilted_songs(40), MeasuredConfig())
    assert report["band_layout"] in ("3 bands", "5 bands") and resolved.bands in (3, 5)
    assert report["macro_both"] > report["band_layouts"]["broadband"]["macro_both"] + 0.1
    assert report["no_error_both"] >= resolved.min_no_error_both


def test_tuned_shrinkage_falls_as_songs_show_the_structured_target_is_wrong():
    """The shrinkage is tuned by held-out likelihood: the songs' shared spectral tilt is not in the
    structured target (a stem offset plus independent band noise), so with more songs the fit trusts
    the sample covariance more; without the tilt the target is right and it keeps it all the way."""
    from mixcritic.critics.measured.critic import with_bands
    from mixcritic.critics.measured.tuning import tune_shrinkage

    config = MeasuredConfig(band_edges_hz=BAND_CHOICES["5 bands"])

    def tuned(songs: int, tilt_sd_db: float = 6.0) -> float:
        chunks = [with_bands(c, config) for c in tilted_songs(songs, tilt_sd_db=tilt_sd_db)]
        return tune_shrinkage(chunks, config.bands, config.min_variance_db2)[0]

    assert [tuned(n) for n in (4, 10, 40)] == [0.9, 0.2, 0.0]  # measured: 0.9, 0.2, 0.0
    assert tuned(6, tilt_sd_db=0.0) == tuned(40, tilt_sd_db=0.0) == 1.0


@needs_musdb7
def test_a_given_prior_and_band_layout_are_kept(musdb7_data):
    edges = BAND_CHOICES["5 bands"]
    critic = fit_measured(musdb7_data, "train", no_error_prior=0.3, band_edges_hz=edges, shrinkage=0.25)
    assert critic.no_error_prior == 0.3 and not critic.fit_summary["cross_validation"]["prior_tuned"]
    assert critic.config.shrinkage == 0.25 and not critic.fit_summary["cross_validation"]["shrinkage_tuned"]
    assert critic.config.band_edges_hz == edges and critic.model.bands == 5
    assert critic.fit_summary["cross_validation"]["band_layout"] == "given"


@needs_musdb7
def test_a_9_db_flaw_on_real_test_songs_is_found(musdb7_data, train_critic):
    """Fit on the 8 train songs; on each of the 4 unseen test songs put the bass 9 dB too loud, or
    the vocals 9 dB too quiet (anchor: drums). Measured: 6 of the 8 are named with the right stem
    and direction (the misses are songs whose natural balance is itself ~8-11 dB off the typical)."""
    from mixcritic.dataset import open_dataset

    dataset = open_dataset(musdb7_data)
    songs = sorted({r["track_key"] for r in dataset.records("test")})
    found = 0
    for key in songs:
        audio = dataset.stems(key)[:, : 5 * RATE]
        stems = {s: np.array(audio[i]) for i, s in enumerate(STEMS)}
        for stem, gain_db, direction in (("bass", 9.0, "decrease"), ("vocals", -9.0, "increase")):
            label = train_critic.judge([segment(flawed(stems, stem, gain_db))])[0].label
            found += label.stem == stem and label.direction == direction
    assert len(songs) == 4 and found >= 6


def test_a_9_db_flaw_on_toy_songs_is_found(tmp_path):
    """Fit on procedural toy songs, then flaw an unseen toy song: +9 dB bass and -9 dB vocals."""
    from mixcritic.synthesis import SynthConfig, synthesize
    from mixcritic.toy import make_toy_song, write_toy_tree
    from mixcritic.audio import resample, to_mono

    write_toy_tree(tmp_path / "toy", tracks=6, seconds=6.0, seed=3)
    synthesize(tmp_path / "toy", tmp_path / "data", SynthConfig(segment_s=5.0, valid_fraction=0.0), show_progress=False)
    critic = fit_measured(tmp_path / "data", ("train", "test"))
    found, total = 0, 0
    for seed in (101, 102, 103, 104):
        song = {s: resample(to_mono(a), 44_100, RATE)[: 5 * RATE] for s, a in make_toy_song(seed, 5.0).items()}
        for stem, gain_db, direction in (("bass", 9.0, "decrease"), ("vocals", -9.0, "increase")):
            label = critic.judge([segment(flawed(song, stem, gain_db))])[0].label
            found += label.stem == stem and label.direction == direction
            total += 1
    assert found >= 7, f"found {found} of {total}"


@needs_musdb7
def test_builtin_regenerates_identically():
    """The shipped builtin.json equals what scripts/build_builtin_critic.py produces now."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import build_builtin_critic as build
    finally:
        sys.path.pop(0)
    fresh = build.build(MUSDB7)
    shipped = json.loads(build.DEFAULT_OUT.read_text(encoding="utf-8"))
    assert _close(fresh, shipped), "builtin.json is stale: run `python scripts/build_builtin_critic.py`"
    assert build.render(fresh) == build.DEFAULT_OUT.read_text(encoding="utf-8")


def _close(a, b, tol: float = 1e-4) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b


def test_load_measured_refuses_incomplete_or_foreign_folders(tmp_path):
    folder = save_measured(load_builtin(), tmp_path / "run")
    (folder / "COMPLETE").unlink()
    with pytest.raises(ModelError, match="COMPLETE"):
        load_measured(folder)
    assert not is_measured_folder(folder)
    (folder / "COMPLETE").write_text("complete\n")
    data = json.loads((folder / "mixcritic.json").read_text())
    (folder / "mixcritic.json").write_text(json.dumps({**data, "engine": "llm"}))
    with pytest.raises(ModelError, match="not a usable measured critic"):
        load_measured(folder)
    with pytest.raises(ModelError, match="no mixcritic.json"):
        load_measured(tmp_path / "nothing")


def test_config_rejects_bad_options():
    with pytest.raises(ValueError, match="shrinkage"):
        MeasuredConfig(shrinkage=2.0)
    with pytest.raises(ValueError, match="band edges"):
        MeasuredConfig(band_edges_hz=(500.0, 100.0))
    with pytest.raises(ModelError, match="unknown measured-critic option"):
        fit_measured(Path("nowhere"), bands=3)


def test_fitting_and_judging_import_neither_torch_nor_transformers(tmp_path):
    code = f"""
import sys
from pathlib import Path
import numpy as np
from mixcritic.synthesis import SynthConfig, synthesize
from mixcritic.toy import write_toy_tree
from mixcritic.critics import Segment
from mixcritic.critics.measured import fit_measured, load_builtin, save_measured, load_measured
root = Path({str(tmp_path)!r})
write_toy_tree(root / "toy", tracks=4, seconds=6.0, seed=1)
synthesize(root / "toy", root / "data", SynthConfig(segment_s=5.0, valid_fraction=0.0), show_progress=False)
critic = load_measured(save_measured(fit_measured(root / "data", ("train", "test")), root / "run"))
stems = {{s: np.random.default_rng(0).standard_normal(24000).astype(np.float32) for s in ("bass", "drums", "other", "vocals")}}
for c in (critic, load_builtin()):
    c.judge([Segment(None, stems, "drums", "x", tuple(stems))])
heavy = sorted(m for m in ("torch", "transformers", "bitsandbytes", "peft") if m in sys.modules)
print("HEAVY", heavy)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_kweighting_response_matches_the_loudness_filters():
    """features.py writes the K-weighting biquads out (no scipy.signal import); they must equal
    the ones stemloudness builds from pyloudnorm, so the measured levels are BS.1770-weighted."""
    import scipy.signal

    from mixcritic.critics.measured.features import kweighting_power_response
    from mixcritic.stemloudness import kweighting_sos

    for rate in (24_000, 44_100):
        freqs = np.array([20.0, 38.0, 100.0, 1000.0, 1500.0, 4000.0, 10_000.0])
        _, response = scipy.signal.sosfreqz(kweighting_sos(rate), worN=freqs, fs=rate)
        np.testing.assert_allclose(kweighting_power_response(freqs, rate), np.abs(response) ** 2, rtol=1e-9)


def test_log_ndtr_matches_scipy_in_both_tails():
    from scipy.special import log_ndtr as reference

    from mixcritic.critics.measured.model import log_ndtr

    z = np.concatenate([np.linspace(-60, 12, 721), [-19.999, -20.0, -20.001, 0.0, 40.0]])
    np.testing.assert_allclose(log_ndtr(z), reference(z), rtol=1e-9, atol=1e-300)


@needs_musdb7
def test_vectorised_cross_validation_agrees_with_judging_one_case_at_a_time(musdb7_data):
    """tuning.grid_scores (used to tune the prior) must score exactly what the critic answers."""
    from mixcritic.critics.measured.critic import MeasuredCritic, dataset_chunks, fit_from_chunks, judgement_from
    from mixcritic.critics.measured.tuning import grid_cases, grid_scores, song_folds
    from mixcritic.labels import CATEGORIES, GAIN_RANGE_DB, TARGET_STEMS
    from mixcritic.metrics import Case, both_correct, by_category

    config = MeasuredConfig(no_error_prior=0.25, band_edges_hz=BAND_CHOICES["broadband"], shrinkage=0.5)
    chunks, _ = dataset_chunks(musdb7_data, ("train",), config)
    fast = grid_scores(grid_cases(chunks, config, draws=2), 0.25)
    cases = []
    for held_out in song_folds([c.track for c in chunks]):
        critic = MeasuredCritic(fit_from_chunks([c for c in chunks if c.track not in held_out], config), config, "x", 5.0)
        for chunk in (c for c in chunks if c.track in held_out):
            for anchor in TARGET_STEMS:
                for target in (s for s in TARGET_STEMS if s != anchor):
                    for category in CATEGORIES:
                        low, high = GAIN_RANGE_DB[category]
                        for k in range(2):
                            levels = dict(chunk.levels_db)
                            levels[target] = levels[target] + low + (k + 0.5) / 2 * (high - low)
                            label = judgement_from(critic.posterior_for_levels(levels, anchor)).label
                            cases.append(Case("x", category, target, label, anchor))
    slow = by_category(cases)
    assert len(cases) == 8 * 6 * 5 * 2
    assert fast["macro_both"] == pytest.approx(slow["macro"]["both"], abs=1e-12)
    assert fast["no_error_both"] == pytest.approx(slow["rows"]["no_error"]["both"], abs=1e-12)
    assert fast["magnitude_given_both"] == pytest.approx(slow["macro"]["magnitude_given_both"], abs=1e-12)
    assert sum(both_correct(c) for c in cases) > 0
