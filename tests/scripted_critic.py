"""A scripted critic for evaluate and critique tests: its answer is a known function of the clip
and the instruction it receives, so a test can recompute, record by record, what the critic must
have said if (and only if) that record's own clip and instruction reached it.

It implements the :class:`mixcritic.critics.Critic` protocol and keeps a log of every call.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from mixcritic.critics import Judgement, Segment
from mixcritic.labels import CATEGORIES, TARGET_STEMS, Label
from mixcritic.templates import STEM_DISPLAY_NAMES, parse_response, render_response


def hashed_answer(mix: np.ndarray, instruction: str) -> str:
    """A parseable answer drawn from a hash of the exact clip (float32 bytes) and instruction."""
    digest = hashlib.blake2b(np.ascontiguousarray(mix, dtype=np.float32).tobytes() + instruction.encode("utf-8"),
                             digest_size=8).digest()
    label = Label.for_flaw(CATEGORIES[digest[0] % 5], TARGET_STEMS[digest[1] % 3])
    return render_response(label, digest[2] % 10)


def anchor_named(instruction: str) -> str:
    """The anchor stem an instruction names (every template says "the <anchor>" once)."""
    names = {STEM_DISPLAY_NAMES[stem]: stem for stem in TARGET_STEMS}
    found = {names[m] for m in re.findall(r"\b[Tt]he (bass|drums|vocals)\b", instruction)}
    assert len(found) == 1, instruction
    return found.pop()


def dominant_hz(mix: np.ndarray, rate_hz: int = 24_000) -> float:
    """Frequency of the strongest FFT bin of the clip."""
    spectrum = np.abs(np.fft.rfft(mix.astype(np.float64)))
    return float(np.argmax(spectrum[1:]) + 1) * rate_hz / len(mix)


class ScriptedCritic:
    """Answers ``answer(segment)`` for each segment; logs batch sizes and every segment."""

    engine = "llm"
    needs_stems = False

    def __init__(self, answer, settings: dict | None = None, fail_on_call: int | None = None) -> None:
        self.answer = answer
        self.settings = {"sample_rate_hz": 24_000, "segment_s": 10.0, "target_lufs": -23.0} | (settings or {})
        self.fail_on_call = fail_on_call
        self.batches: list[int] = []
        self.segments: list[Segment] = []

    def describe(self) -> str:
        return "scripted test critic"

    def judge(self, segments: list[Segment]) -> list[Judgement]:
        if self.fail_on_call is not None and len(self.batches) + 1 == self.fail_on_call:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during this batch
        self.batches.append(len(segments))
        self.segments.extend(segments)
        texts = [self.answer(segment) for segment in segments]
        return [Judgement(parse_response(text), text) for text in texts]


def by_clip_and_instruction(segment: Segment) -> str:
    return hashed_answer(segment.mix, segment.instruction)
