"""Shared pytest fixtures. Everything is synthesised here: no network, no model weights.

Two things are not synthesised: the real-music fixture ``../shared/musdb7-cc`` and the optional
``[plot]`` extra (matplotlib). A local run without them skips the tests that need them, saying
why; in CI (``CI=true``) their absence is a failure, so CI always runs everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def in_ci() -> bool:
    """True when ``CI`` is set to a true value (GitHub Actions, GitLab and ``.ci/run`` set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require(available: bool, reason: str) -> None:
    """Skip the calling test when ``available`` is false, or fail it in CI: CI must run everything."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def shared_dir() -> Path:
    """``$MIXCRITIC_SHARED`` or ``../shared`` next to the repository root."""
    return Path(os.environ.get("MIXCRITIC_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


def musdb7_root() -> Path:
    """The real-music fixture (12 songs, 7 s excerpts): skipped locally when absent, a failure in CI."""
    root = shared_dir() / "musdb7-cc"
    require((root / "train").is_dir() and (root / "test").is_dir(),
            f"real-music fixture {root} is absent (set MIXCRITIC_SHARED to the folder that holds musdb7-cc)")
    return root


def require_matplotlib() -> None:
    """Skip (locally) or fail (CI) when the ``[plot]`` extra is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        require(False, "matplotlib is not installed (pip install -e '.[plot]')")


REQUIRED_IN_CI = ("musdb7-cc", "matplotlib")
"""A skip whose reason names one of these fails in CI, whoever wrote the skip (a plain ``skipif`` too)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, turn a skip for a missing real-music fixture or plot extra into a failure."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(name in reason for name in REQUIRED_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where it must run: {reason}"


@pytest.fixture
def musdb7() -> Path:
    """Path of ``musdb7-cc``; see :func:`musdb7_root`."""
    return musdb7_root()


@pytest.fixture
def sine_24k() -> np.ndarray:
    """2 s of a 440 Hz sine at 0.25 amplitude, 24 kHz mono float32."""
    t = np.arange(48_000) / 24_000
    return (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


pytest_plugins = ["pytester"]  # tests/test_ci.py runs small test files through this conftest

from model_helpers import tiny_base  # noqa: E402,F401 - session fixture shared by the model tests
