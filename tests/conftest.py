"""Shared pytest fixtures. Everything is synthesised here: no network, no model weights."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def sine_24k() -> np.ndarray:
    """2 s of a 440 Hz sine at 0.25 amplitude, 24 kHz mono float32."""
    t = np.arange(48_000) / 24_000
    return (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


from model_helpers import tiny_base  # noqa: E402,F401 - session fixture shared by the model tests
