"""The MixingBuddy paper's published results, shown beside ours by ``mixcritic evaluate``.

Final model (Qwen2-7B-Instruct + MERT-v1-330M, QLoRA r16/a32), 25,650 synthetic test clips from
the MUSDB18-HQ test split, 5,130 per category. Accuracies are fractions (0.693 = 69.3 %); None
where the paper prints "–". Keys match the report produced by :mod:`mixcritic.metrics`.

``DERIVED`` holds what follows from the published counts by arithmetic alone; it is how the
definitions in ``metrics`` were chosen (see ``docs/evaluation.md``, "Reverse-engineering the
paper's counts").
"""

from __future__ import annotations

PAPER_TEST_SAMPLES = 25_650
"""Test clips in the paper's evaluation."""

PAPER_SAMPLES_PER_CATEGORY = 5_130
"""Test clips per category (balanced)."""

PAPER: dict = {
    "by_category": {
        "rows": {
            "very_quiet": {"n": 5130, "both": 0.693, "stem": 0.722, "direction": 0.799, "magnitude": 0.972},
            "quiet": {"n": 5130, "both": 0.538, "stem": 0.621, "direction": 0.688, "magnitude": 0.462},
            "no_error": {"n": 5130, "both": 0.093, "stem": None, "direction": None, "magnitude": None},
            "loud": {"n": 5130, "both": 0.381, "stem": 0.528, "direction": 0.496, "magnitude": 0.632},
            "very_loud": {"n": 5130, "both": 0.788, "stem": 0.847, "direction": 0.847, "magnitude": 0.976},
        },
        "macro": {"n": 25650, "both": 0.499, "stem": 0.562, "direction": 0.584, "magnitude": 0.761},
    },
    "by_stem": {
        "rows": {
            "vocals": {"n": 8550, "both": 0.550, "stem": 0.603, "direction": 0.654, "magnitude": 0.931},
            "drums": {"n": 8550, "both": 0.499, "stem": 0.543, "direction": 0.562, "magnitude": 0.723},
            "bass": {"n": 8550, "both": 0.447, "stem": 0.540, "direction": 0.536, "magnitude": 0.628},
        },
    },
    "by_direction": {
        "rows": {
            "decrease": {"n": 10260, "both": 0.5843},
            "increase": {"n": 10260, "both": 0.6156},
        },
    },
    "tasks": {
        "error_detection": {"fp": 4079, "fn": 2060, "precision": 0.819, "recall": 0.8996, "f1": 0.8574},
        "stem_identification": {"fp": 5035, "fn": 1545, "precision": 0.7347, "recall": 0.9002, "f1": 0.8091},
        "direction": {"fp": 8028, "fn": 2635, "precision": 0.6438, "recall": 0.8463, "f1": 0.7313},
    },
}
"""The paper's tables, as printed (REFERENCE.md)."""

DERIVED: dict = {
    "error_detection_tp": 18460,
    "stem_identification_tp": 13940,
    "direction_tp": 14509,
    "direction_fp_on_no_error": 4652,
    "false_alarm_rate": 4079 / 5130,
}
"""Counts implied by the published ones (see ``docs/evaluation.md``).

* Error detection: recall 89.96 % with FN 2,060 gives TP = 18,460 = 20,520 flawed - FN.
* Stem identification: TP = 20,520 - 5,035 - 1,545 = 13,940 gives precision 73.47 % and recall
  90.02 % exactly, so FP and FN are both counted on flawed samples only (FP = another stem named,
  FN = none named); 13,940 / 20,520 = 67.9 % equals the mean of the four flawed Stem accuracies.
* Direction: recall 84.63 % with FN 2,635 gives TP = 14,509 (70.7 % of flawed = the mean of the
  four flawed Direction accuracies). TP + FN leaves 3,376 flawed samples with the wrong direction,
  so 8,028 - 3,376 = 4,652 of the FPs are no-error samples given a direction; 5,130 - 4,652 = 478
  = 9.3 %, the paper's no-error accuracy.
* The paper's 4,079 error-detection FPs are fewer than those 4,652: its labels came from several
  pattern matchers that disagree; ours come from one parser, so our counts stay consistent.
"""
