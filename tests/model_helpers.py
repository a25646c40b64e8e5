"""Test helpers for the model tests: a small in-memory dataset and a tiny-spec cache."""

from __future__ import annotations

import numpy as np
import pytest

from mixcritic.labels import TARGET_STEMS

RATE_HZ = 24_000

TEST_TINY_SPEC_KW = {"pretrain_steps": 20}
"""Tiny base used by the tests: a short text-only pre-training keeps the session setup to seconds."""


def tone(freq_hz: float, seconds: float, amp: float = 0.1) -> np.ndarray:
    """A sine tone, float32 at 24 kHz."""
    t = np.arange(int(round(seconds * RATE_HZ))) / RATE_HZ
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


class FakeSource:
    """Duck-typed stand-in for mixcritic.dataset.Dataset: each record's audio is a tone whose
    pitch encodes its answer, so the answer is learnable from audio alone."""

    def __init__(self, n_train: int = 8, n_val: int = 4, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.info = {"options": {"segment_s": seconds, "target_lufs": -23.0}, "template_version": "test-1",
                     "sample_rate_hz": RATE_HZ}
        answers = [f"The {stem} is too loud." for stem in TARGET_STEMS]
        self._records = {"train": [], "valid": []}
        for split, count in (("train", n_train), ("valid", n_val)):
            for i in range(count):
                k = i % len(answers)
                self._records[split].append({
                    "id": f"{split}-{i}", "split": split, "duration_s": seconds, "answer_index": k,
                    "instruction": f"Use the {TARGET_STEMS[(k + 1) % 3]} as the anchor.",
                    "response": answers[k],
                })

    def records(self, split: str) -> list[dict]:
        return list(self._records.get(split, []))

    def render(self, record: dict, normalize: bool = True) -> np.ndarray:
        return tone(220.0 * (1 + record["answer_index"]), self.seconds)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """Tiny MERT + Qwen2 base models built once per session in a temporary cache
    (``MIXCRITIC_CACHE_DIR`` points there for the whole session)."""
    import os

    from mixcritic.critics.llm.tiny import TinySpec, ensure_tiny_base

    root = tmp_path_factory.mktemp("mixcritic-cache")
    previous = os.environ.get("MIXCRITIC_CACHE_DIR")
    os.environ["MIXCRITIC_CACHE_DIR"] = str(root)
    yield ensure_tiny_base(TinySpec(**TEST_TINY_SPEC_KW), root)
    if previous is None:
        os.environ.pop("MIXCRITIC_CACHE_DIR", None)
    else:
        os.environ["MIXCRITIC_CACHE_DIR"] = previous
