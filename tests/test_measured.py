"""The measured critic: exact level measurement, the posterior, fit/save/load, the built-in fit,
flaws found on toy and real stems, calibration metrics, and no torch on its path."""

from __future__ import annotations

import math

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
