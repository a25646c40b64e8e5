"""Critic doubles for the seam tests: a stand-in for the measured engine (reads the stems, gives
confidences) that answers a fixed label and records the segments it was given."""

from __future__ import annotations

from mixcritic.critics import Judgement, Segment
from mixcritic.labels import Label
from mixcritic.templates import render_response

STAND_IN_SETTINGS = {"sample_rate_hz": 24_000, "segment_s": 10.0, "target_lufs": -23.0, "engine": "measured"}


class StandInMeasured:
    """Says ``label`` for every segment with confidence ``confidence``; keeps every segment it judged."""

    engine = "measured"
    needs_stems = True

    def __init__(self, label: Label | None = None, confidence: float = 0.75, no_error: float = 0.125,
                 settings: dict | None = None) -> None:
        self.label = label or Label.for_flaw("very_loud", "bass")
        self.confidence = confidence
        self.no_error = no_error
        self.settings = dict(STAND_IN_SETTINGS if settings is None else settings)
        self.segments: list[Segment] = []

    def describe(self) -> str:
        return "stand-in measured critic"

    def judge(self, segments: list[Segment]) -> list[Judgement]:
        self.segments.extend(segments)
        for segment in segments:
            assert segment.stems is not None, "the measured critic was given no stems"
        text = render_response(self.label, 0)
        return [Judgement(self.label, text, self.confidence, {"no_error": self.no_error}) for _ in segments]
