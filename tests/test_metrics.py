"""Every metric on a hand-built prediction set; the expected values were counted by hand.

The 14 cases (truth -> answer), with what each one scores:

 #  truth            answer                 stem dir both magnitude(unsigned)
 1  very_quiet bass   very_quiet bass        y    y   y    y
 2  very_quiet drums  quiet drums            y    y   y    n
 3  very_quiet vocals very_loud vocals       y    n   n    y   (6-12 either sign)
 4  quiet bass        quiet drums            n    y   n    y
 5  quiet vocals      no_error               n    n   n    n
 6  quiet drums       (unparseable)          n    n   n    n
 7  loud bass         loud bass              y    y   y    y
 8  loud vocals       very_loud bass         n    y   n    n
 9  very_loud drums   very_loud drums        y    y   y    y
10  very_loud bass    very_quiet vocals      n    n   n    y
11  no_error bass     no_error               correct
12  no_error drums    loud drums             false alarm
13  no_error vocals   (unparseable)          wrong
14  no_error bass     quiet vocals           false alarm
"""

from __future__ import annotations

import pytest

from mixcritic import metrics
from mixcritic.labels import Label
from mixcritic.metrics import Case


def flaw(category: str, stem: str | None = None) -> Label:
    return Label.for_flaw(category, stem)


CASES = [
    Case("1", "very_quiet", "bass", flaw("very_quiet", "bass")),
    Case("2", "very_quiet", "drums", flaw("quiet", "drums")),
    Case("3", "very_quiet", "vocals", flaw("very_loud", "vocals")),
    Case("4", "quiet", "bass", flaw("quiet", "drums")),
    Case("5", "quiet", "vocals", flaw("no_error")),
    Case("6", "quiet", "drums", None),
    Case("7", "loud", "bass", flaw("loud", "bass")),
    Case("8", "loud", "vocals", flaw("very_loud", "bass")),
    Case("9", "very_loud", "drums", flaw("very_loud", "drums")),
    Case("10", "very_loud", "bass", flaw("very_quiet", "vocals")),
    Case("11", "no_error", "bass", flaw("no_error")),
    Case("12", "no_error", "drums", flaw("loud", "drums")),
    Case("13", "no_error", "vocals", None),
    Case("14", "no_error", "bass", flaw("quiet", "vocals")),
]

KEYS = ("n", "n_flawed", "both", "stem", "direction", "magnitude", "magnitude_given_both", "unparseable")


def row_tuple(row: dict) -> tuple:
    return tuple(row[k] for k in KEYS)


def approx_row(*values) -> tuple:
    return tuple(v if v is None or isinstance(v, int) else pytest.approx(v) for v in values)


@pytest.fixture(scope="module")
def report() -> dict:
    return metrics.build_report(CASES)


def test_per_sample_judgements():
    got = [
        (metrics.stem_correct(c), metrics.direction_correct(c), metrics.both_correct(c), metrics.magnitude_correct(c))
        for c in CASES
    ]
    y, n = True, False
    assert got == [
        (y, y, y, y), (y, y, y, n), (y, n, n, y), (n, y, n, y), (n, n, n, n), (n, n, n, n), (y, y, y, y),
        (n, y, n, n), (y, y, y, y), (n, n, n, y), (y, y, y, None), (n, n, n, None), (n, n, n, None),
        (n, n, n, None),
    ]  # fmt: skip


def test_by_category(report):
    rows = report["by_category"]["rows"]
    assert list(rows) == ["very_quiet", "quiet", "no_error", "loud", "very_loud"]
    #                                  n  flawed both  stem  dir   mag   mag|both unparseable
    assert row_tuple(rows["very_quiet"]) == approx_row(3, 3, 2 / 3, 3 / 3, 2 / 3, 2 / 3, 1 / 2, 0.0)
    assert row_tuple(rows["quiet"]) == approx_row(3, 3, 0.0, 0.0, 1 / 3, 1 / 3, None, 1 / 3)
    assert row_tuple(rows["no_error"]) == approx_row(4, 0, 1 / 4, 1 / 4, 1 / 4, None, None, 1 / 4)
    assert row_tuple(rows["loud"]) == approx_row(2, 2, 1 / 2, 1 / 2, 2 / 2, 1 / 2, 1.0, 0.0)
    assert row_tuple(rows["very_loud"]) == approx_row(2, 2, 1 / 2, 1 / 2, 1 / 2, 2 / 2, 1.0, 0.0)
    # Macro: Both/Stem/Direction over 5 rows, Magnitude over the 4 flawed, mag|both over the 3 defined.
    macro = report["by_category"]["macro"]
    assert macro["both"] == pytest.approx(23 / 60)
    assert macro["stem"] == pytest.approx(9 / 20)
    assert macro["direction"] == pytest.approx(11 / 20)
    assert macro["magnitude"] == pytest.approx(0.625)
    assert macro["magnitude_given_both"] == pytest.approx(5 / 6)
    assert rows["very_quiet"]["correct"] == {
        "both": 2, "stem": 3, "direction": 2, "magnitude": 2, "magnitude_given_both": 1
    }  # fmt: skip


def test_by_stem_counts_no_error_samples(report):
    rows = report["by_stem"]["rows"]
    assert list(rows) == ["bass", "drums", "vocals"]
    assert row_tuple(rows["bass"]) == approx_row(6, 4, 3 / 6, 3 / 6, 4 / 6, 4 / 4, 2 / 2, 0.0)
    assert row_tuple(rows["drums"]) == approx_row(4, 3, 2 / 4, 2 / 4, 2 / 4, 1 / 3, 1 / 2, 1 / 4)
    assert row_tuple(rows["vocals"]) == approx_row(4, 3, 0.0, 1 / 4, 1 / 4, 1 / 3, None, 1 / 4)


def test_by_direction_is_flawed_only(report):
    rows = report["by_direction"]["rows"]
    assert row_tuple(rows["increase"]) == approx_row(6, 6, 2 / 6, 3 / 6, 3 / 6, 3 / 6, 1 / 2, 1 / 6)
    assert row_tuple(rows["decrease"]) == approx_row(4, 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4, 2 / 2, 0.0)


def test_detection_tasks(report):
    tasks = report["tasks"]
    det = tasks["error_detection"]
    assert (det["tp"], det["fp"], det["fn"], det["tn"]) == (8, 3, 2, 1)
    assert (det["fp_unparseable"], det["fn_unparseable"]) == (1, 1)
    assert (det["precision"], det["recall"], det["f1"]) == pytest.approx((8 / 11, 8 / 10, 16 / 21))

    stem = tasks["stem_identification"]
    assert (stem["tp"], stem["fp"], stem["fn"]) == (5, 3, 2)
    assert (stem["fp_unparseable"], stem["fn_unparseable"]) == (0, 1)
    assert (stem["precision"], stem["recall"], stem["f1"]) == pytest.approx((5 / 8, 5 / 7, 2 / 3))

    direction = tasks["direction"]
    assert (direction["tp"], direction["fp"], direction["fn"]) == (6, 5, 2)
    assert (direction["fp_unparseable"], direction["fn_unparseable"]) == (1, 1)
    assert (direction["precision"], direction["recall"], direction["f1"]) == pytest.approx((6 / 11, 3 / 4, 12 / 19))


def test_confusion_false_alarms_and_unparseable(report):
    confusion = report["confusion"]
    assert confusion["columns"] == ["very_quiet", "quiet", "no_error", "loud", "very_loud", "unparseable"]
    assert confusion["counts"] == [
        [1, 1, 0, 0, 1, 0],
        [0, 1, 1, 0, 0, 1],
        [0, 1, 1, 1, 0, 1],
        [0, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 1, 0],
    ]
    assert report["false_alarm_rate"] == pytest.approx(2 / 4)
    assert report["unparseable"] == {"count": 2, "share": pytest.approx(2 / 14)}
    accuracy = report["category_accuracy"]
    assert accuracy["overall"] == pytest.approx(5 / 14)
    assert accuracy["macro"] == pytest.approx(23 / 60)
    assert (report["n"], report["n_flawed"]) == (14, 10)


def test_empty_and_all_unparseable_inputs():
    empty = metrics.build_report([])
    assert empty["by_category"]["rows"] == {}
    assert empty["by_category"]["macro"]["both"] is None
    assert empty["tasks"]["error_detection"]["precision"] is None
    assert empty["false_alarm_rate"] is None

    lost = metrics.build_report([Case("a", "loud", "bass", None), Case("b", "no_error", "drums", None)])
    det = lost["tasks"]["error_detection"]
    assert (det["tp"], det["fp"], det["fn"], det["tn"]) == (0, 1, 1, 0)
    assert (det["precision"], det["recall"], det["f1"]) == (0.0, 0.0, 0.0)
    assert lost["unparseable"]["share"] == 1.0
    assert lost["false_alarm_rate"] == 0.0


def test_definitions_reproduce_the_papers_published_rates():
    """Our TP/FP/FN readings turn the paper's published counts into its published rates."""
    from mixcritic.reference import DERIVED, PAPER

    flawed, clean = 20_520, 5_130
    for task, tp in [
        ("error_detection", flawed - 2060),
        ("stem_identification", flawed - 5035 - 1545),
        ("direction", DERIVED["direction_tp"]),
    ]:
        published = PAPER["tasks"][task]
        got = metrics.precision_recall_f1(tp, published["fp"], published["fn"])
        assert got == pytest.approx((published["precision"], published["recall"], published["f1"]), abs=6e-4)
    # Direction: flawed samples split into TP / wrong direction / none; the rest of FP is no-error.
    wrong_direction = flawed - DERIVED["direction_tp"] - 2635
    assert 8028 - wrong_direction == DERIVED["direction_fp_on_no_error"]
    assert (clean - DERIVED["direction_fp_on_no_error"]) / clean == pytest.approx(0.093, abs=5e-4)
    # The macro row = mean over 5 categories (Both/Stem/Direction, no-error scored as Both) and 4 for Magnitude.
    rows = PAPER["by_category"]["rows"]
    stem_macro = (sum(rows[c]["stem"] for c in metrics.FLAW_CATEGORIES) + rows["no_error"]["both"]) / 5
    magnitude_macro = sum(rows[c]["magnitude"] for c in metrics.FLAW_CATEGORIES) / 4
    assert stem_macro == pytest.approx(PAPER["by_category"]["macro"]["stem"], abs=6e-4)
    assert magnitude_macro == pytest.approx(PAPER["by_category"]["macro"]["magnitude"], abs=6e-4)


def test_case_rejects_unknown_truth():
    with pytest.raises(ValueError, match="other"):
        Case("x", "loud", "other", None)
    with pytest.raises(ValueError, match="unknown category"):
        Case("x", "too_loud", "bass", None)


def test_bootstrap_interval_brackets_the_macro_and_is_seeded(report):
    ci = report["by_category"]["macro_ci95"]
    macro = report["by_category"]["macro"]
    for key in ("both", "stem", "direction", "magnitude"):
        low, high = ci[key]
        assert 0.0 <= low <= macro[key] <= high <= 1.0
        assert high - low > 0.1  # 14 cases cannot pin anything down
    assert metrics.bootstrap_macro_ci(CASES) == metrics.bootstrap_macro_ci(CASES)
    perfect = [Case(str(i), c.category, c.stem, Label.for_flaw(c.category, c.stem)) for i, c in enumerate(CASES)]
    assert metrics.bootstrap_macro_ci(perfect) == {k: [1.0, 1.0] for k in ("both", "stem", "direction", "magnitude")}
    assert metrics.bootstrap_macro_ci([]) == {k: None for k in ("both", "stem", "direction", "magnitude")}


def test_anchor_named_counts_claims_on_the_reference_stem():
    cases = [
        Case("a", "loud", "bass", flaw("loud", "drums"), anchor="drums"),  # names the anchor
        Case("b", "loud", "bass", flaw("loud", "bass"), anchor="drums"),
        Case("c", "no_error", "vocals", flaw("quiet", "bass"), anchor="bass"),  # names the anchor
        Case("d", "quiet", "vocals", flaw("no_error"), anchor="bass"),  # no claim
        Case("e", "quiet", "vocals", None, anchor="bass"),  # unparseable: no claim
        Case("f", "quiet", "vocals", flaw("quiet", "drums")),  # anchor unknown: not counted
    ]
    assert metrics.anchor_named(cases) == {"count": 2, "share_of_claims": pytest.approx(2 / 3)}
    assert metrics.anchor_named(CASES) == {"count": 0, "share_of_claims": None}


# ---------------------------------------------------------------------------------------------
# The bootstrap interval measures what it claims


def half_right(n_per_category: int) -> list[Case]:
    """Every category answered right on exactly half its clips (Both, Stem, Direction)."""
    cases = []
    for category in ("very_quiet", "quiet", "no_error", "loud", "very_loud"):
        for i in range(n_per_category):
            stem = ("bass", "drums", "vocals")[i % 3]
            right = i % 2 == 0
            if category == "no_error":
                answer = flaw("no_error") if right else flaw("loud", stem)
            else:
                answer = flaw(category, stem) if right else flaw("no_error")
            cases.append(Case(f"{category}{i}", category, stem, answer))
    return cases


def test_bootstrap_interval_has_the_width_of_a_known_variance():
    # Macro of 5 category means, each of 200 Bernoulli(1/2) clips: sd = sqrt(5 * 0.25 / 200) / 5
    # = 0.01581, so a 95 % interval spans 2 x 1.96 x 0.01581 = 0.0620 around 0.5.
    import math

    cases = half_right(200)
    expected_width = 2 * 1.959964 * math.sqrt(5 * 0.25 / 200) / 5
    for seed in range(3):
        ci = metrics.bootstrap_macro_ci(cases, resamples=2000, seed=seed)
        for key in ("both", "stem", "direction"):
            low, high = ci[key]
            assert high - low == pytest.approx(expected_width, rel=0.05), (seed, key)
            assert (low + high) / 2 == pytest.approx(0.5, abs=0.004), (seed, key)
        low, high = ci["magnitude"]  # 4 flawed categories, half right: sd = sqrt(4 * 0.25 / 200) / 4
        assert high - low == pytest.approx(2 * 1.959964 * math.sqrt(4 * 0.25 / 200) / 4, rel=0.08), seed
    # a 90 % interval is narrower by 1.645 / 1.960
    ci90 = metrics.bootstrap_macro_ci(cases, resamples=2000, level=0.90, seed=0)["both"]
    assert ci90[1] - ci90[0] == pytest.approx(expected_width * 1.644854 / 1.959964, rel=0.08)


def test_bootstrap_interval_is_reproducible_per_seed_and_moves_with_it():
    cases = half_right(30)
    assert metrics.bootstrap_macro_ci(cases, seed=7) == metrics.bootstrap_macro_ci(cases, seed=7)
    assert metrics.bootstrap_macro_ci(cases, seed=7) != metrics.bootstrap_macro_ci(cases, seed=8)
    assert metrics.build_report(cases)["by_category"]["macro_ci95"] == metrics.bootstrap_macro_ci(cases)


def test_bootstrap_interval_covers_the_true_macro_about_95_percent_of_the_time():
    import numpy as np

    truth = {"very_quiet": 0.9, "quiet": 0.5, "no_error": 0.2, "loud": 0.4, "very_loud": 0.8}
    true_macro = sum(truth.values()) / 5  # 0.56
    rng = np.random.default_rng(0)
    covered, trials = 0, 200
    for trial in range(trials):
        cases = []
        for category, p in truth.items():
            for i, right in enumerate(rng.random(60) < p):
                stem = ("bass", "drums", "vocals")[i % 3]
                if category == "no_error":
                    answer = flaw("no_error") if right else flaw("loud", stem)
                else:
                    answer = flaw(category, stem) if right else flaw("no_error")
                cases.append(Case(f"{category}{i}", category, stem, answer))
        low, high = metrics.bootstrap_macro_ci(cases, resamples=400, seed=trial)["both"]
        covered += low <= true_macro <= high
    # binomial sd of the coverage over 200 trials is 1.5 points; the percentile bootstrap runs a bit short
    assert 0.89 <= covered / trials <= 0.99, covered
