"""The helpers of bench/learning.py on known inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("learning", Path(__file__).resolve().parents[1] / "bench" / "learning.py")
learning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning)


def test_checkpoints_lists_only_complete_ones_by_step(tmp_path):
    for step, complete in ((200, True), (100, True), (300, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("trained.safetensors", "mixcritic.json") + (("COMPLETE",) if complete else ()):
            (folder / name).write_text("x")
    (tmp_path / "model").mkdir()
    assert [step for step, _ in learning.checkpoints(tmp_path)] == [100, 200]


def test_markdown_table_shows_percentages_and_the_gap():
    report = {"datasets": {"toy": {"curve": [{"step": 100, "macro_both_audio": 0.5, "macro_both_muted": 0.125, "gap_points": 37.5}]}}}
    assert learning.markdown(report).splitlines()[-1] == "| toy | 100 | 50.0 % | 12.5 % | +37.5 |"
