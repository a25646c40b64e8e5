"""The metrics code, run on populations built from the paper's published counts, prints the paper's figures.

Each population is a list of :class:`~mixcritic.metrics.Case` whose answers are arranged to
match the paper's counts; :mod:`mixcritic.metrics` then scores it like any evaluation. If a
definition in ``metrics.py`` changed (what counts as FP, how the macro row averages, whether
the magnitude ignores the sign...), these figures would no longer come out.
"""

from __future__ import annotations

import pytest

from mixcritic import metrics
from mixcritic.labels import CATEGORIES, TARGET_STEMS, Label
from mixcritic.metrics import Case
from mixcritic.reference import DERIVED, PAPER, PAPER_SAMPLES_PER_CATEGORY

N = PAPER_SAMPLES_PER_CATEGORY  # 5,130 clips per category
FLAWS = [c for c in CATEGORIES if c != "no_error"]
OPPOSITE = {"quiet": "loud", "loud": "quiet", "very_quiet": "very_loud", "very_loud": "very_quiet"}
OTHER_SEVERITY = {"quiet": "very_quiet", "very_quiet": "quiet", "loud": "very_loud", "very_loud": "loud"}


def other_stem(stem: str) -> str:
    return TARGET_STEMS[(TARGET_STEMS.index(stem) + 1) % len(TARGET_STEMS)]


def answer(truth: str, stem: str, right_stem: bool, right_direction: bool, right_magnitude: bool) -> Label:
    """A flaw answer with exactly the wanted correctness (the magnitude compares unsigned ranges)."""
    same_direction = truth if right_magnitude else OTHER_SEVERITY[truth]
    category = same_direction if right_direction else OPPOSITE[same_direction]
    return Label.for_flaw(category, stem if right_stem else other_stem(stem))


def category_population(category: str, row: dict) -> list[Case]:
    """5,130 clips of one category whose Both / Stem / Direction / Magnitude are the paper's row."""
    stems = [TARGET_STEMS[i % 3] for i in range(N)]
    if category == "no_error":
        correct = round(row["both"] * N)
        answers = [Label("no_error")] * correct + [Label.for_flaw("loud", s) for s in stems[correct:]]
        return [Case(f"{category}{i}", category, s, a) for i, (s, a) in enumerate(zip(stems, answers))]
    both = round(row["both"] * N)
    stem_only = round(row["stem"] * N) - both
    direction_only = round(row["direction"] * N) - both
    neither = N - both - stem_only - direction_only
    wrong_magnitude = N - round(row["magnitude"] * N)
    groups = [(True, True)] * both + [(True, False)] * stem_only + [(False, True)] * direction_only + [(False, False)] * neither
    cases = []
    for i, ((right_stem, right_direction), stem) in enumerate(zip(groups, stems)):
        # the wrong magnitudes are spread from the end (the "neither" group) backwards
        right_magnitude = i < N - wrong_magnitude
        cases.append(Case(f"{category}{i}", category, stem, answer(category, stem, right_stem, right_direction, right_magnitude)))
    return cases


@pytest.fixture(scope="module")
def paper_population() -> list[Case]:
    rows = PAPER["by_category"]["rows"]
    return [case for category in CATEGORIES for case in category_population(category, rows[category])]


def test_category_rows_and_macro_come_out_as_published(paper_population):
    table = metrics.by_category(paper_population)
    for category, published in PAPER["by_category"]["rows"].items():
        row = table["rows"][category]
        assert row["n"] == N
        for key in ("both", "stem", "direction", "magnitude"):
            if published[key] is None:
                assert row[key] == row["both"] if key != "magnitude" else row[key] is None
                continue
            assert row[key] == pytest.approx(published[key], abs=0.5 / N), (category, key)
    # The macro row: mean over the 5 rows (no error scored as Both) for Both/Stem/Direction, over the
    # 4 flawed rows for Magnitude. The paper prints it rounded to 0.1 %.
    for key, published in PAPER["by_category"]["macro"].items():
        if key != "n":
            assert table["macro"][key] == pytest.approx(published, abs=0.0007), key
    assert table["macro"]["n"] == PAPER["by_category"]["macro"]["n"]


def flawed_cases(counts: list[tuple[int, object]]) -> list[Case]:
    """Flawed clips (quiet vocals) answered as given: (how many, answer) pairs."""
    answers = [a for count, a in counts for _ in range(count)]
    return [Case(f"f{i}", "quiet", "vocals", a) for i, a in enumerate(answers)]


def clean_cases(counts: list[tuple[int, object]]) -> list[Case]:
    answers = [a for count, a in counts for _ in range(count)]
    return [Case(f"c{i}", "no_error", TARGET_STEMS[i % 3], a) for i, a in enumerate(answers)]


RIGHT = Label.for_flaw("quiet", "vocals")
WRONG_STEM = Label.for_flaw("quiet", "drums")
WRONG_DIRECTION = Label.for_flaw("loud", "vocals")
CLEAN = Label("no_error")
FLAWED, CLEAN_N = 4 * N, N  # 20,520 and 5,130


def published_match(row: dict, task: str) -> None:
    published = PAPER["tasks"][task]
    assert (row["fp"], row["fn"]) == (published["fp"], published["fn"])
    for key in ("precision", "recall", "f1"):
        digits = len(str(published[key]).split(".")[1])
        assert round(row[key], digits) == published[key], (task, key, row[key])


def test_error_detection_counts_give_the_published_rates():
    tp = DERIVED["error_detection_tp"]
    # FN: flawed clips answered "no adjustment" or unparseable (both count); FP: clean clips with a claim
    cases = flawed_cases([(tp, WRONG_STEM), (1500, CLEAN), (FLAWED - tp - 1500, None)])
    cases += clean_cases([(4000, RIGHT), (79, None), (CLEAN_N - 4079, CLEAN)])
    row = metrics.detection_tasks(cases)["error_detection"]
    assert (row["tp"], row["tn"], row["fp_unparseable"], row["fn_unparseable"]) == (tp, CLEAN_N - 4079, 79, 560)
    published_match(row, "error_detection")


def test_stem_identification_counts_give_the_published_rates():
    tp = DERIVED["stem_identification_tp"]
    # FP = another stem named (any direction), FN = none named; clean clips do not enter at all
    cases = flawed_cases([(tp - 100, RIGHT), (100, WRONG_DIRECTION), (5035, WRONG_STEM), (1545, CLEAN)])
    cases += clean_cases([(CLEAN_N, WRONG_STEM)])
    row = metrics.detection_tasks(cases)["stem_identification"]
    assert row["tp"] == tp and tp + row["fp"] + row["fn"] == FLAWED
    published_match(row, "stem_identification")


def test_direction_counts_give_the_published_rates_and_the_no_error_accuracy():
    tp = DERIVED["direction_tp"]
    wrong = FLAWED - tp - 2635  # 3,376 flawed clips given the wrong direction
    on_clean = DERIVED["direction_fp_on_no_error"]  # 4,652 clean clips given a direction
    cases = flawed_cases([(tp - 200, RIGHT), (200, WRONG_STEM), (wrong, WRONG_DIRECTION), (2635, CLEAN)])
    cases += clean_cases([(on_clean, RIGHT), (CLEAN_N - on_clean, CLEAN)])
    row = metrics.detection_tasks(cases)["direction"]
    assert row["tp"] == tp
    published_match(row, "direction")
    no_error = metrics.by_category(cases)["rows"]["no_error"]["both"]  # 478 / 5,130
    assert round(no_error, 3) == PAPER["by_category"]["rows"]["no_error"]["both"]
