"""The scoring and probing helpers of bench/learning.py on known inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from mixcritic.labels import Label
from mixcritic.templates import render_response

spec = importlib.util.spec_from_file_location("learning", Path(__file__).resolve().parents[1] / "bench" / "learning.py")
learning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning)


def test_score_counts_category_and_stem_hits_and_unparseable():
    records = [
        {"category": "loud", "target_stem": "bass"},
        {"category": "quiet", "target_stem": "vocals"},
        {"category": "no_error", "target_stem": "drums"},
        {"category": "very_loud", "target_stem": "drums"},
    ]
    answers = [
        render_response(Label.for_flaw("loud", "bass"), 0),  # both right
        render_response(Label.for_flaw("very_quiet", "vocals"), 1),  # stem right, category wrong
        render_response(Label.for_flaw("no_error", None), 2),  # right
        "I cannot tell.",  # unparseable: wrong on both
    ]
    result = learning.score(answers, records)
    assert result["category_accuracy"] == 0.5
    assert result["stem_accuracy_on_flawed"] == round(2 / 3, 4)
    assert result["unparseable"] == 0.25
    assert result["predicted_categories"] == {"loud": 1, "very_quiet": 1, "no_error": 1, "unparseable": 1}


def test_linear_probe_separates_separable_classes():
    x = torch.cat([torch.randn(50, 3) + 5, torch.randn(50, 3) - 5])
    y = torch.tensor([0] * 50 + [1] * 50)
    assert learning.probe_accuracy(x, y, x, y, 2, steps=100) == 1.0
