"""Helpers for the critique tests: a small in-memory dataset of flawed toy mixes and a tiny run.

``ToySource`` is duck-typed like ``mixcritic.dataset.Dataset`` (``info``, ``records(split)``,
``render(record, normalize=True)``), so ``mixcritic.train.run_training`` trains a real tiny
checkpoint from it without writing a dataset to disk.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np

from mixcritic.audio import apply_gain_db, normalize_loudness, to_mono
from mixcritic.labels import CATEGORIES, GAIN_RANGE_DB, STEMS, TARGET_STEMS, Label
from mixcritic.templates import TEMPLATE_VERSION, render_instruction, render_response
from mixcritic.toy import make_toy_song

RATE_HZ = 24_000


@lru_cache(maxsize=8)
def toy_stems_24k(seed: int, seconds: float) -> dict[str, np.ndarray]:
    """A toy song's stems, mono float32 at 24 kHz."""
    return {stem: to_mono(audio) for stem, audio in make_toy_song(seed, seconds, RATE_HZ).items()}


class ToySource:
    """Flawed toy mixes with their instruction / response, rendered on the fly."""

    def __init__(self, n_train: int = 16, n_val: int = 0, segment_s: float = 10.0, seed: int = 0) -> None:
        self.segment_s = segment_s
        self.info = {"segment_s": segment_s, "target_lufs": -23.0, "template_version": TEMPLATE_VERSION}
        rng = random.Random(seed)
        self._records = {"train": [], "val": []}
        for split, count in (("train", n_train), ("val", n_val)):
            for i in range(count):
                target, anchor = rng.sample(TARGET_STEMS, 2)
                category = CATEGORIES[i % len(CATEGORIES)]
                low, high = GAIN_RANGE_DB[category]
                label = Label.for_flaw(category, target)
                self._records[split].append({
                    "id": f"{split}-{i}", "split": split, "song_seed": seed * 100 + i % 3, "duration_s": segment_s,
                    "target_stem": target, "anchor_stem": anchor, "category": category,
                    "gain_db": rng.uniform(low, high),
                    "instruction": render_instruction(rng.randrange(10), segment_s, STEMS, anchor),
                    "response": render_response(label, rng.randrange(10)),
                })

    def records(self, split: str) -> list[dict]:
        return list(self._records.get(split, []))

    def render(self, record: dict, normalize: bool = True) -> np.ndarray:
        stems = toy_stems_24k(record["song_seed"], self.segment_s)
        mix = sum(apply_gain_db(a, record["gain_db"]) if s == record["target_stem"] else a for s, a in stems.items())
        mix = mix.astype(np.float32)
        return normalize_loudness(mix, RATE_HZ, -23.0) if normalize else mix


def train_tiny_checkpoint(out_dir: Path, max_steps: int = 6, n_train: int = 8) -> Path:
    """A real tiny run (``mixcritic train --preset tiny`` code path, few steps) in ``out_dir``."""
    from mixcritic.train import TrainRequest, run_training

    request = TrainRequest(
        data_dir=out_dir / "in-memory", out_dir=out_dir, preset="tiny",
        train_overrides=(("max_steps", max_steps), ("save_steps", 10_000), ("workers", 0)),
        device="cpu", progress=False,
    )
    run_training(request, source=ToySource(n_train=n_train))
    return out_dir
