"""Non-learned critics that ``mixcritic evaluate --baseline`` scores with the model's metric code.

* ``loudness``: measures each stem's loudness relative to the anchor and compares it with what
  is typical in the unflawed training chunks; the stem that deviates most is named, and the
  deviation in dB is mapped to a category with thresholds fitted on the validation split.
  **It sees the separate stems, which the model never does** (the model hears only the mix).
* ``majority``: always the most frequent answer of the training split.
* ``random``: a category drawn with the training split's frequencies and a stem drawn uniformly
  from the target stems that are not the anchor, seeded per sample.

Each baseline yields a :class:`~mixcritic.labels.Label` per manifest record; ``evaluate`` renders
it to text with the response templates and parses it back, exactly like a model's answer.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mixcritic.errors import DatasetError
from mixcritic.labels import CATEGORIES, TARGET_STEMS, Label

BASELINES: tuple[str, ...] = ("loudness", "majority", "random")
"""Names accepted by ``--baseline``."""

THRESHOLD_CATEGORIES: tuple[str, ...] = ("very_quiet", "quiet", "no_error", "loud", "very_loud")
"""Categories in order of the measured deviation, from most negative to most positive."""

NOMINAL_THRESHOLDS_DB: tuple[float, float, float, float] = (-6.0, -3.0, 3.0, 6.0)
"""Category borders of the flaw grid (and the threshold search's starting point)."""

SEES_STEMS_NOTE = (
    "The loudness baseline measures the separate stems of each sample (render_stems); the model "
    "hears only the summed mix. It shows what a plain level measurement achieves with information the model "
    "does not have; it is not a like-for-like rival."
)
"""Said in every report of the loudness baseline."""


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def sample_seed(seed: int, sample_id: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the sample id (so resumed runs agree)."""
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))])


def eligible_stems(record: dict) -> list[str]:
    """Target stems that may carry the flaw of ``record``: present, and not its anchor."""
    present = record.get("stems_present") or TARGET_STEMS
    return [s for s in TARGET_STEMS if s != record["anchor_stem"] and s in present]


def truth_label(record: dict) -> Label:
    """The correct answer for a manifest record."""
    return Label.for_flaw(record["category"], record["target_stem"])


def most_frequent_label(records: Iterable[dict]) -> Label:
    """The most frequent correct answer among ``records`` (ties: first in category, stem order)."""
    counts = Counter(truth_label(r) for r in records)
    if not counts:
        raise DatasetError("the training split is empty, so the majority answer is undefined; re-run `mixcritic synth`")

    def order(label: Label) -> tuple:
        return (-counts[label], CATEGORIES.index(label.category), TARGET_STEMS.index(label.stem) if label.stem else -1)

    return min(counts, key=order)


def category_frequencies(records: Iterable[dict]) -> dict[str, float]:
    """Share of each category among ``records`` (every category present as a key)."""
    counts = Counter(r["category"] for r in records)
    total = sum(counts.values())
    if not total:
        raise DatasetError("the training split is empty; re-run `mixcritic synth`")
    return {c: counts[c] / total for c in CATEGORIES}


def category_for_deviation(deviation_db: float, thresholds_db: Sequence[float]) -> str:
    """Map a measured level deviation (dB, + = too loud) to a category.

    ``thresholds_db`` = (t1, t2, t3, t4): below t1 very_quiet, [t1, t2) quiet, [t2, t3] no_error,
    (t3, t4] loud, above t4 very_loud.
    """
    t1, t2, t3, t4 = thresholds_db
    if deviation_db < t1:
        return "very_quiet"
    if deviation_db < t2:
        return "quiet"
    if deviation_db <= t3:
        return "no_error"
    if deviation_db <= t4:
        return "loud"
    return "very_loud"


def category_indices(deviations_db: np.ndarray, thresholds_db: Sequence[float]) -> np.ndarray:
    """Vectorised :func:`category_for_deviation`: indices into ``THRESHOLD_CATEGORIES``."""
    d = np.asarray(deviations_db, dtype=np.float64)
    t1, t2, t3, t4 = thresholds_db
    return (d >= t1).astype(np.int64) + (d >= t2) + (d > t3) + (d > t4)


def macro_category_accuracy(deviations_db: np.ndarray, truths: Sequence[str], thresholds_db: Sequence[float]) -> float:
    """Mean over the categories present of the share of samples mapped to their true category."""
    return _macro_accuracy(np.asarray(deviations_db, dtype=np.float64), _truth_indices(truths), thresholds_db)


def _truth_indices(truths: Sequence[str]) -> np.ndarray:
    return np.asarray([THRESHOLD_CATEGORIES.index(t) for t in truths], dtype=np.int64)


def _macro_accuracy(deviations_db: np.ndarray, truth_idx: np.ndarray, thresholds_db: Sequence[float]) -> float:
    if truth_idx.size == 0:
        return 0.0
    hits = category_indices(deviations_db, thresholds_db) == truth_idx
    totals = np.bincount(truth_idx, minlength=5)
    correct = np.bincount(truth_idx, weights=hits, minlength=5)
    present = totals > 0
    return float(np.mean(correct[present] / totals[present]))


def fit_thresholds(
    deviations_db: Sequence[float],
    truths: Sequence[str],
    step_db: float = 0.25,
    span_db: float = 18.0,
    rounds: int = 8,
) -> tuple[float, float, float, float]:
    """Thresholds that maximise macro category accuracy, by coordinate ascent on a grid.

    Starts at the grid's nominal borders (-6, -3, 3, 6) dB and moves one threshold at a time to
    the grid value (``step_db`` apart, within +-``span_db``) that helps most while keeping the
    four in order; stops when a round changes nothing. Deterministic; ties keep the current value.
    """
    values = np.asarray(deviations_db, dtype=np.float64)
    truth_idx = _truth_indices(truths)
    grid = np.arange(-span_db, span_db + step_db / 2, step_db)
    best = list(NOMINAL_THRESHOLDS_DB)
    best_score = _macro_accuracy(values, truth_idx, best)
    for _ in range(rounds):
        changed = False
        for k in range(4):
            low = best[k - 1] if k > 0 else -np.inf
            high = best[k + 1] if k < 3 else np.inf
            for candidate in grid:
                if not low <= candidate <= high or candidate == best[k]:
                    continue
                trial = best.copy()
                trial[k] = float(candidate)
                score = _macro_accuracy(values, truth_idx, trial)
                if score > best_score + 1e-12:
                    best, best_score, changed = trial, score, True
        if not changed:
            break
    return tuple(best)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The loudness baseline


@dataclass
class LoudnessBaselineConfig:
    """Settings of the loudness baseline (written into the report)."""

    max_fit_chunks: int = 2000
    """Training chunks measured to learn typical relative loudness (drawn with the seed if more)."""
    max_threshold_samples: int = 3000
    """Validation samples measured to fit the category thresholds (drawn with the seed if more)."""
    threshold_step_db: float = 0.25
    """Grid step of the threshold search, dB."""
    seed: int = 0
    """Seed for the subsampling above."""

    def __post_init__(self) -> None:
        if self.max_fit_chunks < 1:
            raise ValueError("max_fit_chunks must be >= 1")
        if self.max_threshold_samples < 1:
            raise ValueError("max_threshold_samples must be >= 1")
        if not self.threshold_step_db > 0:
            raise ValueError("threshold_step_db must be > 0")


def stem_loudness_lufs(stems: dict[str, np.ndarray], names: Iterable[str], rate_hz: int) -> dict[str, float]:
    """Integrated loudness of each named stem that is present, in LUFS (``-inf`` when silent)."""
    from mixcritic.audio import loudness_lufs

    return {s: loudness_lufs(stems[s], rate_hz, name=s) for s in names if s in stems}


def relative_offsets_db(loudness_lufs: dict[str, float]) -> dict[tuple[str, str], float]:
    """``L[stem] - L[anchor]`` for every ordered pair of audible target stems."""
    from mixcritic.audio import is_silent

    audible = [s for s in TARGET_STEMS if s in loudness_lufs and not is_silent(loudness_lufs[s])]
    return {(s, a): loudness_lufs[s] - loudness_lufs[a] for s in audible for a in audible if s != a}


def typical_offsets_db(per_chunk: Iterable[dict[tuple[str, str], float]]) -> dict[tuple[str, str], float]:
    """Median of each (stem, anchor) offset over chunks: the typical balance of unflawed mixes."""
    pooled: dict[tuple[str, str], list[float]] = {}
    for offsets in per_chunk:
        for pair, value in offsets.items():
            pooled.setdefault(pair, []).append(value)
    return {pair: float(np.median(values)) for pair, values in sorted(pooled.items())}


def deviations_db(
    loudness_lufs: dict[str, float],
    anchor: str,
    candidates: Iterable[str],
    typical: dict[tuple[str, str], float],
) -> dict[str, float]:
    """How far each candidate's level relative to the anchor is from typical, in dB (+ = too loud).

    Candidates that are silent, or whose pair was never seen in training, are left out.
    """
    offsets = relative_offsets_db(loudness_lufs)
    return {c: offsets[(c, anchor)] - typical[(c, anchor)] for c in candidates if (c, anchor) in offsets and (c, anchor) in typical}


def pick_flaw(deviations: dict[str, float]) -> tuple[str | None, float]:
    """The stem with the largest absolute deviation and that deviation; (None, 0.0) if none."""
    if not deviations:
        return None, 0.0
    stem = max(sorted(deviations), key=lambda s: abs(deviations[s]))
    return stem, deviations[stem]


def label_for(stem: str | None, deviation_db: float, thresholds_db: Sequence[float]) -> Label:
    """The answer the loudness baseline gives for a measured deviation."""
    category = category_for_deviation(deviation_db, thresholds_db) if stem is not None else "no_error"
    return Label.for_flaw(category, stem)


def _subsample(items: list, limit: int, seed: int) -> list:
    if len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def clean_stems(stems: dict[str, np.ndarray], record: dict) -> dict[str, np.ndarray]:
    """Undo the target gain that ``render_stems`` applied, giving the chunk's original balance."""
    from mixcritic.audio import apply_gain_db

    out = dict(stems)
    out[record["target_stem"]] = apply_gain_db(stems[record["target_stem"]], -float(record["gain_db"]))
    return out


class LoudnessBaseline:
    """Names the stem whose level relative to the anchor is furthest from typical. See module doc."""

    name = "loudness"

    def __init__(self, typical_db: dict[tuple[str, str], float], thresholds_db: Sequence[float], rate_hz: int,
                 config: LoudnessBaselineConfig, fit_summary: dict | None = None) -> None:
        self.typical_db = typical_db
        self.thresholds_db = tuple(float(t) for t in thresholds_db)
        self.rate_hz = rate_hz
        self.config = config
        self.fit_summary = fit_summary or {}

    @classmethod
    def fit(cls, dataset, train_split: str, validation_split: str | None, rate_hz: int,
            config: LoudnessBaselineConfig, progress: Callable[[Iterable, int, str], Iterable] | None = None
            ) -> "LoudnessBaseline":
        """Learn typical offsets from ``train_split`` chunks and thresholds on ``validation_split``.

        ``progress(iterable, total, description)`` wraps the loops (a Rich bar in the CLI).
        Without a validation split the thresholds are fitted on the training split (a warning is
        the caller's job).
        """
        wrap = progress or (lambda it, total, desc: it)
        train = dataset.records(train_split)
        chunks: dict[tuple, dict] = {}
        for record in train:
            chunks.setdefault((record["track"], float(record["start_s"])), record)
        fit_records = _subsample(list(chunks.values()), config.max_fit_chunks, config.seed)
        per_chunk = []
        for record in wrap(fit_records, len(fit_records), "Loudness baseline: typical balance"):
            stems = clean_stems(dataset.render_stems(record), record)
            per_chunk.append(relative_offsets_db(stem_loudness_lufs(stems, TARGET_STEMS, rate_hz)))
        typical = typical_offsets_db(per_chunk)
        if not typical:
            raise DatasetError(f"split {train_split!r} has no chunk with two audible target stems; re-run `mixcritic synth`")

        threshold_split = validation_split or train_split
        threshold_records = _subsample(dataset.records(threshold_split), config.max_threshold_samples, config.seed)
        measured, truths = [], []
        untuned = cls(typical, NOMINAL_THRESHOLDS_DB, rate_hz, config)
        for record in wrap(threshold_records, len(threshold_records), "Loudness baseline: thresholds"):
            _, deviation = untuned.measure(dataset, record)
            measured.append(deviation)
            truths.append(record["category"])
        thresholds = fit_thresholds(measured, truths, step_db=config.threshold_step_db)
        summary = {
            "fit_split": train_split,
            "fit_chunks": len(fit_records),
            "threshold_split": threshold_split,
            "threshold_samples": len(threshold_records),
            "threshold_macro_category_accuracy": macro_category_accuracy(np.asarray(measured), truths, thresholds),
        }
        return cls(typical, thresholds, rate_hz, config, summary)

    def measure(self, dataset, record: dict) -> tuple[dict[str, float], float]:
        """Per-candidate deviations (dB) of a sample's flawed stems, and the largest one."""
        stems = dataset.render_stems(record)
        names = {record["anchor_stem"], *eligible_stems(record)}
        loudness = stem_loudness_lufs(stems, sorted(names), self.rate_hz)
        deviations = deviations_db(loudness, record["anchor_stem"], eligible_stems(record), self.typical_db)
        return deviations, pick_flaw(deviations)[1]

    def predict(self, dataset, record: dict) -> tuple[Label, dict]:
        """The baseline's answer for one record, and what it measured (for predictions.jsonl)."""
        deviations, _ = self.measure(dataset, record)
        stem, deviation = pick_flaw(deviations)
        return label_for(stem, deviation, self.thresholds_db), {"deviations_db": {k: round(v, 3) for k, v in deviations.items()}}

    def describe(self) -> dict:
        """What goes into the report: settings, fit, and the note that it sees the stems."""
        return {
            "name": self.name,
            "sees_separate_stems": True,
            "note": SEES_STEMS_NOTE,
            "config": asdict(self.config),
            "thresholds_db": list(self.thresholds_db),
            "typical_offsets_db": {f"{s}-{a}": round(v, 3) for (s, a), v in self.typical_db.items()},
            **self.fit_summary,
        }


class MajorityBaseline:
    """Always the most frequent answer of the training split."""

    name = "majority"

    def __init__(self, label: Label) -> None:
        self.label = label

    @classmethod
    def fit(cls, dataset, train_split: str) -> "MajorityBaseline":
        """Count the training split's answers."""
        return cls(most_frequent_label(dataset.records(train_split)))

    def predict(self, dataset, record: dict) -> tuple[Label, dict]:
        """The same answer for every record."""
        return self.label, {}

    def describe(self) -> dict:
        """Name and the constant answer."""
        return {"name": self.name, "sees_separate_stems": False, "answer": {"category": self.label.category, "stem": self.label.stem}}


class RandomBaseline:
    """A category with the training frequencies and a uniformly drawn non-anchor stem, seeded per sample."""

    name = "random"

    def __init__(self, frequencies: dict[str, float], seed: int) -> None:
        self.frequencies = frequencies
        self.seed = seed

    @classmethod
    def fit(cls, dataset, train_split: str, seed: int) -> "RandomBaseline":
        """Count the training split's categories."""
        return cls(category_frequencies(dataset.records(train_split)), seed)

    def predict(self, dataset, record: dict) -> tuple[Label, dict]:
        """A draw that depends only on the seed and the sample id."""
        rng = sample_seed(self.seed, record["id"])
        category = str(rng.choice(list(CATEGORIES), p=[self.frequencies[c] for c in CATEGORIES]))
        stems = eligible_stems(record) or list(TARGET_STEMS)
        stem = str(rng.choice(stems))
        return Label.for_flaw(category, stem), {}

    def describe(self) -> dict:
        """Name, seed and the category frequencies drawn from."""
        return {"name": self.name, "sees_separate_stems": False, "seed": self.seed, "category_frequencies": self.frequencies}
