"""The paper's evaluation metrics, as pure functions over scored cases.

A :class:`Case` pairs the truth of one sample (its flaw category and target stem) with the label
parsed from the answer, or ``None`` when the answer could not be parsed. Nothing here reads audio
or models: :func:`build_report` turns a list of cases into the tables that ``mixcritic evaluate``
prints. The definitions are documented in ``docs/evaluation.md``; in short:

* **Both / Stem / Direction** on a flawed sample: the answer names the true stem and/or the true
  direction (increase for quiet flaws, decrease for loud ones). On a no-error sample all three
  are correct exactly when the answer says that no adjustment is needed. This is the rule that
  reproduces the paper's per-stem rows and its macro row (see ``mixcritic.reference``).
* **Magnitude** (flawed samples only): the answer's correction range, sign ignored, equals the
  truth's (3-6 dB for quiet/loud, 6-12 dB for very quiet/very loud). The paper scores it
  unconditionally (its "very quiet" magnitude, 97.2 %, exceeds its direction accuracy, 79.9 %,
  so the sign cannot have counted); we also report it conditioned on stem + direction correct.
* **Unparseable** answers are kept and count as wrong everywhere: a miss (FN) on a flawed sample,
  a false positive on a no-error sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mixcritic.labels import CATEGORIES, CORRECTION_DB, TARGET_STEMS, Label, check_category, direction_of

REPORT_CATEGORIES: tuple[str, ...] = ("very_quiet", "quiet", "no_error", "loud", "very_loud")
"""Categories in the paper's table order (from the quietest flaw to the loudest)."""

FLAW_CATEGORIES: tuple[str, ...] = tuple(c for c in REPORT_CATEGORIES if c != "no_error")
"""The four categories that carry a flaw."""

DIRECTIONS: tuple[str, ...] = ("increase", "decrease")
"""Correction directions: increase fixes a quiet flaw, decrease a loud one."""

UNPARSEABLE = "unparseable"
"""Column of the confusion matrix for answers the parser could not read."""

ACCURACY_KEYS: tuple[str, ...] = ("both", "stem", "direction", "magnitude", "magnitude_given_both")
"""The accuracy fields of every table row, in display order."""


@dataclass(frozen=True)
class Case:
    """One evaluated sample: the truth and what the answer said."""

    sample_id: str
    """Manifest id of the sample."""
    category: str
    """True flaw category (one of ``labels.CATEGORIES``)."""
    stem: str
    """True target stem. For no-error samples, the stem that received the small (-3..+3 dB) gain."""
    predicted: Label | None
    """The label parsed from the answer; None when the answer was unparseable."""
    anchor: str | None = None
    """The anchor stem named in the instruction (assumed correct); None if unknown."""

    def __post_init__(self) -> None:
        check_category(self.category)
        if self.stem not in TARGET_STEMS:
            raise ValueError(f"case {self.sample_id}: target stem {self.stem!r} is not one of {TARGET_STEMS}")

    @property
    def flawed(self) -> bool:
        """True when the sample carries a flaw (any category but no_error)."""
        return self.category != "no_error"

    @property
    def direction(self) -> str | None:
        """True correction direction, None for no_error."""
        return direction_of(self.category)


# ---------------------------------------------------------------------------------------------
# Per-sample judgements


def says_no_error(predicted: Label | None) -> bool:
    """True when the answer parsed and says no adjustment is needed."""
    return predicted is not None and predicted.category == "no_error"


def claims_flaw(predicted: Label | None) -> bool:
    """True when the answer parsed and names a stem to change."""
    return predicted is not None and predicted.category != "no_error"


def unsigned_range_db(correction_db: tuple[int, int] | None) -> tuple[float, float] | None:
    """A correction range with its sign dropped, low bound first: (-12, -6) -> (6, 12)."""
    if correction_db is None:
        return None
    low, high = sorted(abs(float(v)) for v in correction_db)
    return (low, high)


def stem_correct(case: Case) -> bool:
    """Flawed: the answer names the true stem. No error: the answer says no adjustment."""
    if not case.flawed:
        return says_no_error(case.predicted)
    return claims_flaw(case.predicted) and case.predicted.stem == case.stem


def direction_correct(case: Case) -> bool:
    """Flawed: the answer's direction is the truth's. No error: the answer says no adjustment."""
    if not case.flawed:
        return says_no_error(case.predicted)
    return claims_flaw(case.predicted) and case.predicted.direction == case.direction


def both_correct(case: Case) -> bool:
    """Stem and direction both correct (for no error: the answer says no adjustment)."""
    return stem_correct(case) and direction_correct(case)


def magnitude_correct(case: Case) -> bool | None:
    """The answer's correction range, sign ignored, equals the truth's; None on no-error samples."""
    if not case.flawed:
        return None
    if not claims_flaw(case.predicted):
        return False
    return unsigned_range_db(case.predicted.correction_db) == unsigned_range_db(CORRECTION_DB[case.category])


def predicted_category(case: Case) -> str:
    """The answer's category, or ``"unparseable"``."""
    return UNPARSEABLE if case.predicted is None else case.predicted.category


# ---------------------------------------------------------------------------------------------
# Tables


def share(hits: int, total: int) -> float | None:
    """``hits / total``, or None when there is nothing to count."""
    return hits / total if total else None


def accuracy_row(cases: Sequence[Case]) -> dict:
    """Counts and accuracies over ``cases``: one row of the category / stem / direction tables.

    ``both``, ``stem`` and ``direction`` are over all cases; ``magnitude`` over the flawed ones;
    ``magnitude_given_both`` over the flawed ones whose stem and direction are correct.
    Accuracies are fractions in [0, 1], or None when their denominator is zero.
    """
    flawed = [c for c in cases if c.flawed]
    both_flawed = [c for c in flawed if both_correct(c)]
    n_both = sum(both_correct(c) for c in cases)
    n_stem = sum(stem_correct(c) for c in cases)
    n_direction = sum(direction_correct(c) for c in cases)
    n_magnitude = sum(bool(magnitude_correct(c)) for c in flawed)
    n_magnitude_given_both = sum(bool(magnitude_correct(c)) for c in both_flawed)
    n_unparseable = sum(c.predicted is None for c in cases)
    return {
        "n": len(cases),
        "n_flawed": len(flawed),
        "both": share(n_both, len(cases)),
        "stem": share(n_stem, len(cases)),
        "direction": share(n_direction, len(cases)),
        "magnitude": share(n_magnitude, len(flawed)),
        "magnitude_given_both": share(n_magnitude_given_both, len(both_flawed)),
        "unparseable": share(n_unparseable, len(cases)),
        "correct": {
            "both": n_both,
            "stem": n_stem,
            "direction": n_direction,
            "magnitude": n_magnitude,
            "magnitude_given_both": n_magnitude_given_both,
        },
        "n_unparseable": n_unparseable,
    }


def macro_row(rows: Iterable[dict]) -> dict:
    """Unweighted mean of each accuracy over the rows where it is defined (None if none is)."""
    rows = list(rows)
    out: dict = {"n": sum(r["n"] for r in rows), "n_flawed": sum(r["n_flawed"] for r in rows)}
    for key in (*ACCURACY_KEYS, "unparseable"):
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def by_category(cases: Sequence[Case]) -> dict:
    """Rows per category present (paper order) plus ``macro``, the mean over those rows.

    On balanced data the macro row equals the paper's "macro avg": Both, Stem and Direction
    average five categories (the no-error row counting "no adjustment" as correct), Magnitude
    averages the four flawed ones.
    """
    rows = {cat: accuracy_row([c for c in cases if c.category == cat]) for cat in REPORT_CATEGORIES}
    rows = {cat: row for cat, row in rows.items() if row["n"]}
    return {"rows": rows, "macro": macro_row(rows.values())}


def by_stem(cases: Sequence[Case]) -> dict:
    """Rows per target stem present (no-error samples included, as in the paper's N = 8550)."""
    rows = {stem: accuracy_row([c for c in cases if c.stem == stem]) for stem in TARGET_STEMS}
    rows = {stem: row for stem, row in rows.items() if row["n"]}
    return {"rows": rows, "macro": macro_row(rows.values())}


def by_direction(cases: Sequence[Case]) -> dict:
    """Rows per true direction (flawed samples only)."""
    rows = {d: accuracy_row([c for c in cases if c.direction == d]) for d in DIRECTIONS}
    rows = {d: row for d, row in rows.items() if row["n"]}
    return {"rows": rows, "macro": macro_row(rows.values())}


# ---------------------------------------------------------------------------------------------
# Detection tasks (FP / FN / precision / recall / F1)


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """Precision, recall and F1 from counts; None where a denominator is zero."""
    precision = share(tp, tp + fp)
    recall = share(tp, tp + fn)
    if precision is None or recall is None or precision + recall == 0:
        f1 = None if precision is None or recall is None else 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def _task(tp: int, fp: int, fn: int, fp_unparseable: int, fn_unparseable: int) -> dict:
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fp_unparseable": fp_unparseable,
        "fn_unparseable": fn_unparseable,
    }


def error_detection(cases: Sequence[Case]) -> dict:
    """Positive = "some adjustment is needed".

    TP: flawed, a flaw claimed (any stem or direction). FN: flawed, "no adjustment" or
    unparseable. FP: no error, a flaw claimed or unparseable. TN (reported) the rest.
    """
    flawed = [c for c in cases if c.flawed]
    clean = [c for c in cases if not c.flawed]
    tp = sum(claims_flaw(c.predicted) for c in flawed)
    fn_unparseable = sum(c.predicted is None for c in flawed)
    fp_unparseable = sum(c.predicted is None for c in clean)
    fp = sum(not says_no_error(c.predicted) for c in clean)
    row = _task(tp, fp, len(flawed) - tp, fp_unparseable, fn_unparseable)
    row["tn"] = len(clean) - fp
    return row


def stem_identification(cases: Sequence[Case]) -> dict:
    """On flawed samples: TP names the true stem, FP names another stem, FN names none.

    "Names none" = "no adjustment" or unparseable. No-error samples do not enter: this is the
    reading under which the paper's counts add up (TP + FP + FN = 20,520 flawed samples).
    """
    flawed = [c for c in cases if c.flawed]
    tp = sum(stem_correct(c) for c in flawed)
    fp = sum(claims_flaw(c.predicted) and c.predicted.stem != c.stem for c in flawed)
    fn_unparseable = sum(c.predicted is None for c in flawed)
    return _task(tp, fp, len(flawed) - tp - fp, 0, fn_unparseable)


def direction_prediction(cases: Sequence[Case]) -> dict:
    """TP: flawed, right direction. FP: flawed with the wrong direction, plus no-error samples
    whose answer claims a flaw (hence a direction) or is unparseable. FN: flawed, no direction.

    This is the reading under which the paper's counts add up: its TP + FN + (FP on flawed)
    = 20,520 leaves 4,652 no-error samples with a direction, and 5,130 - 4,652 = 478 is its 9.3 %
    no-error accuracy.
    """
    flawed = [c for c in cases if c.flawed]
    clean = [c for c in cases if not c.flawed]
    tp = sum(direction_correct(c) for c in flawed)
    fp_flawed = sum(claims_flaw(c.predicted) and c.predicted.direction != c.direction for c in flawed)
    fp_clean = sum(not says_no_error(c.predicted) for c in clean)
    fn = len(flawed) - tp - fp_flawed
    return _task(
        tp,
        fp_flawed + fp_clean,
        fn,
        sum(c.predicted is None for c in clean),
        sum(c.predicted is None for c in flawed),
    )


def detection_tasks(cases: Sequence[Case]) -> dict:
    """The paper's FP / FN / precision / recall / F1 table."""
    return {
        "error_detection": error_detection(cases),
        "stem_identification": stem_identification(cases),
        "direction": direction_prediction(cases),
    }


# ---------------------------------------------------------------------------------------------
# Confusion, false alarms, the whole report


def category_confusion(cases: Sequence[Case]) -> dict:
    """Counts of (true category, answered category) with an ``unparseable`` column.

    Rows and columns in the paper's category order. The answered category ignores the stem.
    """
    columns = [*REPORT_CATEGORIES, UNPARSEABLE]
    matrix = [[0] * len(columns) for _ in REPORT_CATEGORIES]
    for case in cases:
        matrix[REPORT_CATEGORIES.index(case.category)][columns.index(predicted_category(case))] += 1
    return {"rows": list(REPORT_CATEGORIES), "columns": columns, "counts": matrix}


def false_alarm_rate(cases: Sequence[Case]) -> float | None:
    """Share of no-error samples whose answer claims a flaw (unparseable answers not included)."""
    clean = [c for c in cases if not c.flawed]
    return share(sum(claims_flaw(c.predicted) for c in clean), len(clean))


def anchor_named(cases: Sequence[Case]) -> dict:
    """Flaw claims that name the anchor stem, which the instruction says is correct.

    Always wrong by construction; a critic that ignores the anchor shows it here. The share is
    over the cases with a known anchor whose answer claims a flaw.
    """
    claims = [c for c in cases if c.anchor is not None and claims_flaw(c.predicted)]
    count = sum(c.predicted.stem == c.anchor for c in claims)
    return {"count": count, "share_of_claims": share(count, len(claims))}


def category_accuracy(cases: Sequence[Case]) -> dict:
    """Exact 5-way category accuracy (stem ignored), overall and macro over categories present."""
    per = {}
    for cat in REPORT_CATEGORIES:
        sub = [c for c in cases if c.category == cat]
        if sub:
            per[cat] = sum(predicted_category(c) == cat for c in sub) / len(sub)
    overall = share(sum(predicted_category(c) == c.category for c in cases), len(cases))
    return {"overall": overall, "macro": sum(per.values()) / len(per) if per else None, "per_category": per}


def bootstrap_macro_ci(
    cases: Sequence[Case], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, list[float] | None]:
    """Percentile bootstrap interval of each macro accuracy of :func:`by_category`.

    Samples are redrawn with replacement inside each category (the design is stratified by
    category), the macro is recomputed ``resamples`` times, and the central ``level`` share of
    those values is returned as ``[low, high]``; None where the macro is undefined. Seeded, so
    the same cases always give the same interval.
    """
    import numpy as np

    judges = {
        "both": lambda c: both_correct(c),
        "stem": lambda c: stem_correct(c),
        "direction": lambda c: direction_correct(c),
        "magnitude": lambda c: magnitude_correct(c),
    }
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0
    out: dict[str, list[float] | None] = {}
    groups = [[c for c in cases if c.category == cat] for cat in REPORT_CATEGORIES]
    draws = [rng.integers(0, len(g), size=(resamples, len(g))) if g else None for g in groups]
    for key, judge in judges.items():
        per_category = []
        for group, idx in zip(groups, draws):
            values = [judge(c) for c in group]
            if not group or values[0] is None:
                continue
            per_category.append(np.asarray(values, dtype=np.float64)[idx].mean(axis=1))
        if not per_category:
            out[key] = None
            continue
        macro = np.mean(per_category, axis=0)
        out[key] = [float(np.quantile(macro, tail)), float(np.quantile(macro, 1.0 - tail))]
    return out


# ---------------------------------------------------------------------------------------------
# Calibration (for critics that give a confidence with each answer)


def reliability_table(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> list[dict]:
    """Per confidence bin: ``{"low", "high", "count", "mean_confidence", "accuracy"}``.

    ``bins`` equal-width bins over [0, 1]; bin ``k`` holds confidences in ``[k/bins, (k+1)/bins)``,
    the last one also 1.0. Empty bins are listed with count 0 and None for the means.
    """
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} correctness flags")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    sums = [[0, 0.0, 0] for _ in range(bins)]  # count, confidence sum, correct count
    for confidence, hit in zip(confidences, correct):
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence {confidence} is outside [0, 1]")
        index = min(int(confidence * bins), bins - 1)
        sums[index][0] += 1
        sums[index][1] += confidence
        sums[index][2] += bool(hit)
    return [
        {
            "low": k / bins,
            "high": (k + 1) / bins,
            "count": count,
            "mean_confidence": total / count if count else None,
            "accuracy": hits / count if count else None,
        }
        for k, (count, total, hits) in enumerate(sums)
    ]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error: sum over bins of ``count / n * |accuracy - mean confidence|``.

    Equal-width bins as in :func:`reliability_table`; None when there are no cases.
    """
    table = reliability_table(confidences, correct, bins)
    total = sum(row["count"] for row in table)
    if not total:
        return None
    return sum(row["count"] / total * abs(row["accuracy"] - row["mean_confidence"]) for row in table if row["count"])


def build_report(cases: Sequence[Case]) -> dict:
    """Every table of ``mixcritic evaluate`` as one JSON-ready dict (fractions, not percent)."""
    unparseable = sum(c.predicted is None for c in cases)
    return {
        "n": len(cases),
        "n_flawed": sum(c.flawed for c in cases),
        "by_category": {**by_category(cases), "macro_ci95": bootstrap_macro_ci(cases)},
        "by_stem": by_stem(cases),
        "by_direction": by_direction(cases),
        "tasks": detection_tasks(cases),
        "confusion": category_confusion(cases),
        "category_accuracy": category_accuracy(cases),
        "false_alarm_rate": false_alarm_rate(cases),
        "anchor_named": anchor_named(cases),
        "unparseable": {"count": unparseable, "share": share(unparseable, len(cases))},
    }


assert set(REPORT_CATEGORIES) == set(CATEGORIES)
