"""The measured critic: judge segments, fit it from a synthesised dataset, save and load it.

A run folder written by :func:`save_measured` has the shape of an LLM run::

    RUN/model/mixcritic.json   {"engine": "measured", settings..., "model": {fitted numbers}}
    RUN/model/COMPLETE         written last

Everything is JSON (no pickle, no tensors). Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from mixcritic.critics import Judgement, Segment
from mixcritic.critics.measured.features import check_band_edges, levels_from_spectrum_db, mean_power_spectrum, stem_levels_db
from mixcritic.critics.measured.model import (
    BalanceModel, decide, fit_balance, gain_evidence, hypothesis_posterior, relative_level_stats_db,
)
from mixcritic.errors import DatasetError, ModelError
from mixcritic.labels import DEFAULT_TARGET_LUFS, MODEL_SAMPLE_RATE_HZ, STEMS, TARGET_STEMS, Label
from mixcritic.templates import render_response

ENGINE = "measured"
FORMAT_VERSION = 1
SETTINGS_FILE = "mixcritic.json"
COMPLETE_MARKER = "COMPLETE"
RESPONSE_TEMPLATE_ID = 0
"""Response template used for the answer's text."""

BAND_CHOICES: dict[str, tuple[float, ...]] = {
    "broadband": (20.0, 12000.0),
    "3 bands": (20.0, 250.0, 2000.0, 12000.0),
    "5 bands": (20.0, 150.0, 500.0, 2000.0, 6000.0, 12000.0),
}
"""Band layouts the fit chooses from (in order of complexity) when ``band_edges_hz`` is None."""

DEFAULT_NO_ERROR_PRIOR = 0.2
"""The synthesised data's share of balanced mixes: the prior when it cannot be tuned."""

DEFAULT_SHRINKAGE = 0.5
"""The covariance's shrinkage when it cannot be tuned (fewer than three songs)."""

ROUND_DECIMALS = 6
"""Fitted numbers are stored rounded to this many decimals (dB / dB^2): deterministic files."""

TYPICAL_RANGE_SD = 1.0
"""``typical_range_db`` is the fitted mean +- this many standard deviations (1: the central 68 %)."""


@dataclass(frozen=True)
class MeasuredConfig:
    """How the measured critic measures and fits (the options of ``fit_measured``)."""

    band_edges_hz: tuple[float, ...] | None = None
    """Edges of the frequency bands whose K-weighted levels are compared (Hz, increasing); None:
    chosen at fit time among ``BAND_CHOICES`` by cross-validation over the songs (few songs pick
    broadband loudness; more bands need more songs, see docs/measured.md)."""
    band_floor_db: float = 40.0
    """A band's level is floored this far below the stem's total level (keeps empty bands sane)."""
    shrinkage: float | None = None
    """Weight of the two-parameter structured covariance against the sample covariance (0..1); None:
    tuned by cross-validation over the songs (the intensity under which held-out songs are most
    likely: high with few songs, lower as songs are added)."""
    min_variance_db2: float = 0.25
    """Added to every level's variance (dB^2): measurement noise, keeps the covariance invertible."""
    no_error_prior: float | None = None
    """Prior probability of a balanced mix (0..1); None: tuned by cross-validation over the songs."""
    min_no_error_both: float = 0.4
    """The tuned prior is the best for cross-validated macro Both among those that call at least
    this share of balanced mixes balanced (the paper's model managed 9 %)."""
    cv_draws: int = 4
    """Gains per category and held-out chunk in the cross-validation (spread evenly over the range)."""

    def __post_init__(self) -> None:
        if self.band_edges_hz is not None:
            check_band_edges(self.band_edges_hz, MODEL_SAMPLE_RATE_HZ)
        if not self.band_floor_db > 0:
            raise ValueError(f"band_floor_db {self.band_floor_db}: must be > 0")
        if self.shrinkage is not None and not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage {self.shrinkage}: must be in [0, 1], or None to tune it")
        if not self.min_variance_db2 > 0:
            raise ValueError(f"min_variance_db2 {self.min_variance_db2}: must be > 0")
        if self.no_error_prior is not None and not 0.0 < self.no_error_prior < 1.0:
            raise ValueError(f"no_error_prior {self.no_error_prior}: must be in (0, 1), or None to tune it")
        if not 0.0 <= self.min_no_error_both <= 1.0:
            raise ValueError(f"min_no_error_both {self.min_no_error_both}: must be in [0, 1]")
        if self.cv_draws < 1:
            raise ValueError(f"cv_draws {self.cv_draws}: must be >= 1")

    @property
    def bands(self) -> int:
        """Number of bands (the edges must be set)."""
        if self.band_edges_hz is None:
            raise ValueError("band_edges_hz is not chosen yet")
        return len(self.band_edges_hz) - 1

    def to_dict(self) -> dict:
        """JSON-ready options."""
        data = asdict(self)
        data["band_edges_hz"] = None if self.band_edges_hz is None else list(self.band_edges_hz)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "MeasuredConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown measured-critic option(s): {', '.join(unknown)}")
        values = dict(data)
        if values.get("band_edges_hz") is not None:
            values["band_edges_hz"] = tuple(float(e) for e in values["band_edges_hz"])
        return cls(**values)


class MeasuredCritic:
    """Stem levels against a fitted natural balance. Implements :class:`mixcritic.critics.Critic`."""

    engine = ENGINE
    needs_stems = True

    def __init__(self, model: BalanceModel, config: MeasuredConfig, fitted_on: str, segment_s: float,
                 target_lufs: float = DEFAULT_TARGET_LUFS, fit_summary: dict | None = None) -> None:
        if config.band_edges_hz is None or config.no_error_prior is None or config.shrinkage is None:
            raise ValueError("a critic needs a resolved config (band_edges_hz, shrinkage and no_error_prior set)")
        # Rounded as stored, so a critic judges exactly like its saved and reloaded copy.
        self.model = BalanceModel(model.stems, model.bands, np.round(model.mean_db, ROUND_DECIMALS), np.round(model.cov_db2, ROUND_DECIMALS))
        self.config = config
        self.fitted_on = fitted_on
        self.segment_s = float(segment_s)
        self.target_lufs = float(target_lufs)
        self.fit_summary = fit_summary or {}

    @property
    def settings(self) -> dict:
        """sample_rate_hz, segment_s, target_lufs, engine, fitted_on, and the measuring options."""
        return {
            "engine": ENGINE,
            "sample_rate_hz": MODEL_SAMPLE_RATE_HZ,
            "segment_s": self.segment_s,
            "target_lufs": self.target_lufs,
            "fitted_on": self.fitted_on,
            **self.config.to_dict(),
        }

    def describe(self) -> str:
        """One plain line, e.g. ``measured stem loudness (fit on 12 real songs)``."""
        return f"measured stem loudness (fit on {self.fitted_on})"

    def typical_range_db(self, anchor_stem: str) -> dict[str, tuple[float, float]]:
        """``{stem: (low_db, high_db)}``: each other stem's level relative to the anchor that natural
        balance expects, the fitted mean +- ``TYPICAL_RANGE_SD`` standard deviations (the central
        68 % of the predictive Gaussian for an unseen song). Levels are this critic's own: K-weighted
        mean power, 20 Hz-12 kHz (``--export`` plots the same measure). Empty for an unknown anchor."""
        stats = relative_level_stats_db(self.model, anchor_stem)
        return {stem: (mean - TYPICAL_RANGE_SD * sd, mean + TYPICAL_RANGE_SD * sd) for stem, (mean, sd) in stats.items()}

    # -- judging ------------------------------------------------------------------------------------
    def levels(self, stems: dict[str, np.ndarray], present: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Band levels (dB) of the stems that are given, active (in ``present`` when given) and not silent."""
        names = [s for s in self.model.stems if present is None or s in set(present)]
        return stem_levels_db(stems, names, MODEL_SAMPLE_RATE_HZ, self.config.band_edges_hz, self.config.band_floor_db)

    def posterior_for_levels(self, levels_db: dict[str, np.ndarray], anchor_stem: str) -> dict[Label, float]:
        """Posterior over the hypotheses given measured band levels; sums to 1."""
        targets = [s for s in TARGET_STEMS if s != anchor_stem and s in levels_db]
        return hypothesis_posterior(gain_evidence(self.model, levels_db, targets), self.no_error_prior)

    @property
    def fitted_tracks(self) -> frozenset[str]:
        """Names of the songs this critic was fitted on (empty when the fit did not record them)."""
        return frozenset(self.fit_summary.get("tracks") or ())

    @property
    def no_error_prior(self) -> float:
        """The prior of a balanced mix in use (tuned at fit time unless given)."""
        return self.config.no_error_prior

    def probabilities(self, segment: Segment) -> dict[Label, float]:
        """Probability of every hypothesis (no_error, and each flaw category on each candidate stem)."""
        if segment.stems is None:
            raise ModelError("the measured critic needs the separate stems; pass a stems folder, or an LLM run with --model")
        present = segment.stems_present or None
        return self.posterior_for_levels(self.levels(segment.stems, present), segment.anchor_stem)

    def judge(self, segments: list[Segment]) -> list[Judgement]:
        """One answer per segment: the label most likely to name the right stem and direction."""
        return [judgement_from(self.probabilities(segment)) for segment in segments]

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything that rebuilds this critic, JSON-ready (numbers rounded, so files are deterministic)."""
        return {
            "engine": ENGINE,
            "format_version": FORMAT_VERSION,
            "fitted_on": self.fitted_on,
            "segment_s": self.segment_s,
            "sample_rate_hz": MODEL_SAMPLE_RATE_HZ,
            "target_lufs": self.target_lufs,
            "options": self.config.to_dict(),
            "fit": self.fit_summary,
            "model": {
                "stems": list(self.model.stems),
                "bands": self.model.bands,
                "mean_db": self.model.mean_db.tolist(),
                "cov_db2": self.model.cov_db2.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "mixcritic.json") -> "MeasuredCritic":
        """Inverse of :meth:`to_dict`. Raises ModelError naming ``source`` when the data is not usable."""
        try:
            if data.get("engine") != ENGINE:
                raise ValueError(f"engine is {data.get('engine')!r}, not {ENGINE!r}")
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')!r} is not {FORMAT_VERSION}")
            stored = data["model"]
            stems = tuple(stored["stems"])
            bands = int(stored["bands"])
            mean = np.asarray(stored["mean_db"], dtype=np.float64)
            cov = np.asarray(stored["cov_db2"], dtype=np.float64)
            dims = len(stems) * bands
            if stems != STEMS or mean.shape != (dims,) or cov.shape != (dims, dims) or not np.isfinite(cov).all():
                raise ValueError("model arrays have the wrong shape or hold non-finite numbers")
            config = MeasuredConfig.from_dict(data["options"])
            if config.bands != bands:
                raise ValueError(f"options give {config.bands} bands but the model has {bands}")
            model = BalanceModel(stems, bands, mean, cov)
            return cls(model, config, str(data["fitted_on"]), float(data["segment_s"]), float(data["target_lufs"]), data.get("fit") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: not a usable measured critic ({exc}); refit it with `mixcritic train DATA --engine measured`") from None


def judgement_from(posterior: dict[Label, float]) -> Judgement:
    """The Judgement for a posterior: answer, its text, the chance it names the right stem and
    direction (``confidence``), and named probabilities (``no_error``, ``answer``: the exact label)."""
    label, confidence = decide(posterior)
    probabilities = {"no_error": posterior.get(Label("no_error"), 0.0), "answer": posterior[label]}
    for hypothesis, probability in posterior.items():
        if hypothesis.stem is not None:
            probabilities[f"{hypothesis.stem}:{hypothesis.category}"] = probability
    return Judgement(label, render_response(label, RESPONSE_TEMPLATE_ID), _clip01(confidence), probabilities)


def _clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


# ---------------------------------------------------------------------------------------------
# Fitting from a synthesised dataset


@dataclass(frozen=True)
class Chunk:
    """One unflawed chunk of a song: its clean band levels (and the spectra they came from)."""

    track: str
    start_s: float
    levels_db: dict[str, np.ndarray] = field(repr=False)
    """``{stem: (bands,) dB}`` for the active, non-silent stems, in the layout it was measured with."""
    spectra: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    """``{stem: mean power spectrum}``: lets :func:`with_bands` re-measure without the audio."""


def with_bands(chunk: Chunk, config: MeasuredConfig) -> Chunk:
    """The same chunk measured in ``config``'s band layout."""
    levels = {}
    for stem, spectrum in chunk.spectra.items():
        measured = levels_from_spectrum_db(spectrum, MODEL_SAMPLE_RATE_HZ, config.band_edges_hz, config.band_floor_db)
        if measured is not None:
            levels[stem] = measured
    return Chunk(chunk.track, chunk.start_s, levels, chunk.spectra)


def dataset_chunks(data_dir: Path, splits: Sequence[str], config: MeasuredConfig,
                   progress: Callable[[Iterable, int, str], Iterable] | None = None) -> tuple[list[Chunk], dict]:
    """Clean band levels of every distinct chunk in ``splits`` of a ``synth`` dataset, and the dataset info.

    Read from the stem cache (no flaw applied), so each chunk is the song's own balance.
    """
    from mixcritic.dataset import open_dataset

    from dataclasses import replace

    if config.band_edges_hz is None:  # measure broadband; fit_measured re-measures for the layout it picks
        config = replace(config, band_edges_hz=BAND_CHOICES["broadband"])
    dataset = open_dataset(data_dir)
    records = [record for split in splits for record in dataset.records(split)]
    unique: dict[tuple[str, float], dict] = {}
    for record in records:
        unique.setdefault((record["track_key"], float(record["start_s"])), record)
    wrap = progress or (lambda items, total, description: items)
    rate = dataset.sample_rate_hz
    if rate != MODEL_SAMPLE_RATE_HZ:
        raise DatasetError(f"{data_dir}: stems cached at {rate} Hz, expected {MODEL_SAMPLE_RATE_HZ}; re-run `mixcritic synth`")
    chunks = []
    for (track_key, start_s), record in wrap(sorted(unique.items()), len(unique), "Measured critic: stem levels"):
        start = round(start_s * rate)
        stop = start + round(float(record["duration_s"]) * rate)
        audio = dataset.stems(track_key)[:, start:stop]
        stems = {name: audio[index] for index, name in enumerate(STEMS)}
        present = record.get("stems_present") or STEMS
        spectra = {s: mean_power_spectrum(stems[s]) for s in STEMS if s in present}
        chunks.append(with_bands(Chunk(record["track"], start_s, {}, spectra), config))
    return chunks, dataset.info


def complete_levels(chunks: list[Chunk]) -> tuple[np.ndarray, list[str]]:
    """``(chunks, stems * bands)`` stacked levels (``STEMS`` order) of the chunks in which all four
    stems are present, and the song of each."""
    complete = [c for c in chunks if all(s in c.levels_db for s in STEMS)]
    levels = np.array([np.concatenate([c.levels_db[s] for s in STEMS]) for c in complete]).reshape(len(complete), -1)
    return levels, [c.track for c in complete]


def fit_from_chunks(chunks: list[Chunk], config: MeasuredConfig) -> BalanceModel:
    """Fit the natural balance from the chunks in which all four stems are present."""
    levels, tracks = complete_levels(chunks)
    songs = len(set(tracks))
    if songs < 2:
        raise DatasetError(
            f"only {songs} song(s) have all four stems active in some chunk; the measured critic needs at least 2 "
            "(synthesise more songs, or a shorter --segment-s)"
        )
    return fit_balance(levels, tracks, STEMS, config.bands, config.shrinkage, config.min_variance_db2)


def fit_measured(data_dir: Path, split: str | Sequence[str] = "train", progress=None, fitted_on: str | None = None,
                 **options) -> MeasuredCritic:
    """Fit a measured critic on the unflawed chunks of ``split`` of a ``synth`` dataset (seconds, CPU).

    ``split``: one split name or several (e.g. ``("train", "test")`` for the built-in fit).
    ``options``: fields of :class:`MeasuredConfig`. ``fitted_on`` names the data in ``describe()``
    (default: ``"<N> songs"``).
    """
    splits = (split,) if isinstance(split, str) else tuple(split)
    try:
        config = MeasuredConfig.from_dict(options)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"measured critic: {exc}") from None
    data_dir = Path(data_dir)
    chunks, info = dataset_chunks(data_dir, splits, config, progress)
    config, cross_validation = tuned_config(chunks, config, progress)
    chunks = [with_bands(c, config) for c in chunks]
    model = fit_from_chunks(chunks, config)
    songs = sorted({c.track for c in chunks})
    summary = {"splits": list(splits), "songs": len(songs), "tracks": songs, "chunks": len(chunks),
               "chunks_with_all_stems": sum(all(s in c.levels_db for s in STEMS) for c in chunks),
               "cross_validation": cross_validation}
    name = fitted_on or f"{len(songs)} songs"
    options_info = info.get("options", {})
    return MeasuredCritic(model, config, name, float(options_info.get("segment_s", 10.0)),
                          float(options_info.get("target_lufs", DEFAULT_TARGET_LUFS)), summary)


def tuned_config(chunks: list[Chunk], config: MeasuredConfig,
                 progress: Callable[[Iterable, int, str], Iterable] | None = None) -> tuple[MeasuredConfig, dict]:
    """``config`` resolved by cross-validation by song, and the cross-validated scores of the result.

    For each band layout (``band_edges_hz`` None: each of ``BAND_CHOICES``), the shrinkage (when None,
    :func:`tuning.tune_shrinkage`) and then the ``no_error`` prior (when None,
    :func:`tuning.tune_no_error_prior`) are tuned. A richer layout replaces a simpler one only when
    its cross-validated macro Both is higher by more than one standard error of the per-song paired
    difference (so with few songs, noise does not pick it). ``chunks`` must carry spectra.
    ``progress(items, total, description)`` wraps the loop over layouts (a bar in the CLI).
    """
    from dataclasses import replace

    from mixcritic.critics.measured.tuning import grid_cases, grid_scores, per_song_macro_both, song_folds, tune_no_error_prior, tune_shrinkage

    songs = {c.track for c in chunks if all(s in c.levels_db for s in STEMS)}
    if len(songs) < 3:
        resolved = replace(config, band_edges_hz=config.band_edges_hz or BAND_CHOICES["broadband"],
                           shrinkage=DEFAULT_SHRINKAGE if config.shrinkage is None else config.shrinkage,
                           no_error_prior=DEFAULT_NO_ERROR_PRIOR if config.no_error_prior is None else config.no_error_prior)
        return resolved, {"note": f"only {len(songs)} songs: not cross-validated"}
    layouts = BAND_CHOICES if config.band_edges_hz is None else {"given": config.band_edges_hz}
    results = []
    wrap = progress or (lambda items, total, description: items)
    for name, edges in wrap(list(layouts.items()), len(layouts), "Measured critic: cross-validating by song"):
        trial = replace(config, band_edges_hz=edges)
        measured = [with_bands(c, trial) for c in chunks]
        if config.shrinkage is None:
            trial = replace(trial, shrinkage=tune_shrinkage(measured, trial.bands, trial.min_variance_db2)[0])
        cases = grid_cases(measured, trial, config.cv_draws)
        prior = tune_no_error_prior(cases, config.min_no_error_both)[0] if config.no_error_prior is None else config.no_error_prior
        results.append((name, replace(trial, no_error_prior=prior), grid_scores(cases, prior), per_song_macro_both(cases, prior)))
    eligible = [r for r in results if r[2]["no_error_both"] >= config.min_no_error_both] or results[:1]
    chosen = eligible[0]
    for candidate in eligible[1:]:
        gain = candidate[3] - chosen[3]
        if gain.mean() > gain.std(ddof=1) / np.sqrt(len(gain)):
            chosen = candidate
    name, resolved, scores, _ = chosen
    report = {
        "folds": len(song_folds(songs)),
        "songs": len(songs),
        "draws_per_category": config.cv_draws,
        "band_layout": name,
        "shrinkage": resolved.shrinkage,
        "shrinkage_tuned": config.shrinkage is None,
        "no_error_prior": resolved.no_error_prior,
        "prior_tuned": config.no_error_prior is None,
        "macro_both": round(scores["macro_both"], 4),
        "no_error_both": round(scores["no_error_both"], 4),
        "magnitude_given_both": None if scores["magnitude_given_both"] is None else round(scores["magnitude_given_both"], 4),
        "both_per_category": {k: round(v, 4) for k, v in scores["both_per_category"].items()},
    }
    if len(results) > 1:
        report["band_layouts"] = {
            n: {"macro_both": round(sc["macro_both"], 4), "no_error_both": round(sc["no_error_both"], 4),
                "shrinkage": c.shrinkage, "no_error_prior": c.no_error_prior}
            for n, c, sc, _ in results
        }
    return resolved, report


# ---------------------------------------------------------------------------------------------
# Saving and loading


def save_measured(critic: MeasuredCritic, run_dir: Path) -> Path:
    """Write ``RUN/model/mixcritic.json`` atomically, then the COMPLETE marker. Returns ``RUN/model``."""
    from mixcritic.files import write_json_atomic

    folder = Path(run_dir) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    write_json_atomic(folder / SETTINGS_FILE, critic.to_dict())
    (folder / COMPLETE_MARKER).write_text("complete\n")
    return folder


def is_measured_folder(folder: Path) -> bool:
    """True when ``folder`` holds a complete measured critic (``mixcritic.json`` naming it, and COMPLETE)."""
    folder = Path(folder)
    if not ((folder / COMPLETE_MARKER).is_file() and (folder / SETTINGS_FILE).is_file()):
        return False
    try:
        return json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8")).get("engine") == ENGINE
    except (OSError, ValueError, AttributeError):
        return False


def load_measured(folder: Path) -> MeasuredCritic:
    """Load a measured critic from ``RUN/model`` (or ``RUN``). Raises ModelError naming the file."""
    folder = Path(folder)
    if not (folder / SETTINGS_FILE).is_file() and (folder / "model" / SETTINGS_FILE).is_file():
        folder = folder / "model"
    file = folder / SETTINGS_FILE
    if not file.is_file():
        raise ModelError(f"{folder}: no {SETTINGS_FILE}; fit a measured critic with `mixcritic train DATA --engine measured --out RUN`")
    if not (folder / COMPLETE_MARKER).is_file():
        raise ModelError(f"{folder}: no {COMPLETE_MARKER} marker, so the save was interrupted; fit it again")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{file}: unreadable ({exc}); fit it again") from None
    return MeasuredCritic.from_dict(data, str(file))


BUILTIN_FILE = "builtin.json"


def load_builtin() -> MeasuredCritic:
    """The measured critic shipped with the package (fit on the 12 songs of musdb7-cc)."""
    from importlib.resources import files

    resource = files("mixcritic.critics.measured").joinpath(BUILTIN_FILE)
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"the built-in measured critic ({BUILTIN_FILE}) is missing or broken ({exc}); reinstall mixcritic") from None
    return MeasuredCritic.from_dict(data, f"built-in {BUILTIN_FILE}")
