"""Pure parts of the baselines and of the evaluation run: thresholds, offsets, sampling, resume files."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mixcritic import baselines
from mixcritic.baselines import category_for_deviation
from mixcritic.evaluate import read_predictions, stratified_sample
from mixcritic.labels import Label


def test_category_for_deviation_borders():
    t = (-6.0, -3.0, 3.0, 6.0)
    got = [category_for_deviation(d, t) for d in (-12.0, -6.01, -6.0, -3.01, -3.0, 0.0, 3.0, 3.01, 6.0, 6.01, 12.0)]
    assert got == [
        "very_quiet", "very_quiet", "quiet", "quiet", "no_error", "no_error", "no_error", "loud", "loud",
        "very_loud", "very_loud",
    ]  # fmt: skip
    grid = np.arange(-13.0, 13.0, 0.125)
    vectorised = baselines.category_indices(grid, t)
    assert [baselines.THRESHOLD_CATEGORIES[i] for i in vectorised] == [category_for_deviation(d, t) for d in grid]


def test_fit_thresholds_recovers_a_biased_measurement():
    # Every measured deviation reads 2 dB high: the nominal borders misfile 4 of 10 samples.
    truths = ["very_quiet"] * 2 + ["quiet"] * 2 + ["no_error"] * 2 + ["loud"] * 2 + ["very_loud"] * 2
    measured = np.array([-9.0, -5.5, -3.5, -1.5, 1.0, 4.5, 5.5, 7.5, 8.5, 12.0])
    assert baselines.macro_category_accuracy(measured, truths, baselines.NOMINAL_THRESHOLDS_DB) == pytest.approx(0.6)
    fitted = baselines.fit_thresholds(measured, truths)
    assert baselines.macro_category_accuracy(measured, truths, fitted) == 1.0
    t1, t2, t3, t4 = fitted
    assert -5.5 < t1 <= -3.5 and -1.5 < t2 <= 1.0 and 4.5 <= t3 < 5.5 and 7.5 <= t4 < 8.5
    assert fitted == baselines.fit_thresholds(measured, truths)  # deterministic


def test_offsets_deviations_and_pick():
    loudness = {"bass": -20.0, "drums": -18.0, "vocals": float("-inf")}
    offsets = baselines.relative_offsets_db(loudness)
    assert offsets == {("bass", "drums"): -2.0, ("drums", "bass"): 2.0}  # silent vocals left out
    typical = baselines.typical_offsets_db([{("bass", "drums"): -1.0}, {("bass", "drums"): -5.0}, {("bass", "drums"): -4.0}])
    assert typical == {("bass", "drums"): -4.0}
    dev = baselines.deviations_db(
        {"bass": -10.0, "drums": -16.0, "vocals": -25.0}, "drums", ["bass", "vocals"],
        {("bass", "drums"): -2.0, ("vocals", "drums"): -3.0},
    )
    assert dev == pytest.approx({"bass": 8.0, "vocals": -6.0})
    assert baselines.pick_flaw(dev) == ("bass", pytest.approx(8.0))
    assert baselines.pick_flaw({"bass": -3.0, "vocals": 3.0}) == ("bass", -3.0)  # tie: first in stem order
    assert baselines.pick_flaw({}) == (None, 0.0)
    assert baselines.label_for("bass", 8.0, baselines.NOMINAL_THRESHOLDS_DB) == Label.for_flaw("very_loud", "bass")
    assert baselines.label_for(None, 8.0, baselines.NOMINAL_THRESHOLDS_DB) == Label("no_error")


def _record(i: int, category: str, stem: str, anchor: str) -> dict:
    return {"id": f"s{i:03d}", "category": category, "target_stem": stem, "anchor_stem": anchor,
            "stems_present": ["bass", "drums", "other", "vocals"]}


def _grid(repeats: int) -> list[dict]:
    records = []
    for _ in range(repeats):
        for category in ("no_error", "quiet", "very_quiet", "loud", "very_loud"):
            for stem, anchor in (("bass", "drums"), ("drums", "vocals"), ("vocals", "bass")):
                records.append(_record(len(records), category, stem, anchor))
    return records


def test_majority_and_random_baselines():
    records = _grid(4)
    # no_error is 20 % of the records whatever the stem; each (flaw, stem) label is 20 %/3.
    assert baselines.most_frequent_label(records) == Label("no_error")
    assert baselines.category_frequencies(records) == {c: 0.2 for c in ("no_error", "quiet", "very_quiet", "loud", "very_loud")}
    rnd = baselines.RandomBaseline(baselines.category_frequencies(records), seed=3)
    answers = [rnd.predict(None, r)[0] for r in records]
    assert answers == [rnd.predict(None, r)[0] for r in records]  # a function of seed and id only
    assert all(a.stem != r["anchor_stem"] for a, r in zip(answers, records))
    assert len(set(answers)) > 5
    other = baselines.RandomBaseline(rnd.frequencies, seed=4)
    assert answers != [other.predict(None, r)[0] for r in records]


def test_stratified_sample_is_proportional_seeded_and_ordered():
    records = _grid(10)  # 15 cells x 10
    chosen = stratified_sample(records, 30, seed=1)
    assert len(chosen) == 30
    cells = Counter((r["category"], r["target_stem"]) for r in chosen)
    assert set(cells.values()) == {2} and len(cells) == 15
    assert [r["id"] for r in chosen] == sorted(r["id"] for r in chosen)  # manifest order kept
    assert chosen == stratified_sample(records, 30, seed=1)
    assert chosen != stratified_sample(records, 30, seed=2)
    # 7 over 15 equal cells: largest remainders go to the first cells in category, stem order.
    seven = Counter(r["category"] for r in stratified_sample(records, 7, seed=0))
    assert seven == {"no_error": 3, "quiet": 3, "very_quiet": 1}
    assert stratified_sample(records, 10_000, seed=0) == records


def test_read_predictions_drops_a_half_written_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    lines = [json.dumps({"id": f"s{i}", "response": "fine"}) for i in range(3)]
    path.write_text("\n".join(lines) + "\n" + lines[0][:9], encoding="utf-8")
    got = read_predictions(path)
    assert sorted(got) == ["s0", "s1", "s2"]
    assert path.read_text(encoding="utf-8") == "\n".join(lines) + "\n"  # the fragment is gone
    path.write_text(lines[0] + "\n{broken\n" + lines[1] + "\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"predictions.jsonl:2: damaged line"):
        read_predictions(path)


def test_confusion_png_is_optional(tmp_path, monkeypatch):
    import sys

    from mixcritic.evaluate import write_confusion_png

    confusion = {"rows": ["a"], "columns": ["a", "unparseable"], "counts": [[1, 0]]}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    assert write_confusion_png(confusion, tmp_path / "confusion.png", "x") is None
    assert not (tmp_path / "confusion.png").exists()
