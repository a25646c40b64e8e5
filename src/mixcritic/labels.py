"""The label vocabulary every part agrees on: stems, flaw categories, gain and correction ranges.

A flaw is a gain error applied to one *target* stem, judged against an *anchor* stem whose level
is assumed right (paper, section III-A). ``other`` is always mixed in but never target or anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

STEMS: tuple[str, ...] = ("bass", "drums", "other", "vocals")
"""All MUSDB18-HQ stems, in a fixed order."""

TARGET_STEMS: tuple[str, ...] = ("bass", "drums", "vocals")
"""Stems that may carry a flaw or serve as the anchor."""

CATEGORIES: tuple[str, ...] = ("no_error", "quiet", "very_quiet", "loud", "very_loud")
"""Flaw categories, 20 % each in a synthesised dataset."""

GAIN_RANGE_DB: dict[str, tuple[float, float]] = {
    "very_quiet": (-12.0, -6.0),
    "quiet": (-6.0, -3.0),
    "no_error": (-3.0, 3.0),
    "loud": (3.0, 6.0),
    "very_loud": (6.0, 12.0),
}
"""Gain applied to the target stem per category, dB, drawn uniformly (paper, Fig. 3)."""

CORRECTION_DB: dict[str, tuple[int, int] | None] = {
    "very_quiet": (6, 12),
    "quiet": (3, 6),
    "no_error": None,
    "loud": (-6, -3),
    "very_loud": (-12, -6),
}
"""Signed [min, max] dB change that fixes each category: the gain range with its sign flipped."""

DEFAULT_TARGET_LUFS = -23.0
"""Integrated loudness every rendered mix is normalised to before encoding (EBU R128 level)."""

MODEL_SAMPLE_RATE_HZ = 24_000
"""MERT-v1's input sample rate; the stem cache and all rendered mixes use it."""


def direction_of(category: str) -> str | None:
    """'increase' for quiet categories, 'decrease' for loud ones, None for no_error."""
    check_category(category)
    if category in ("quiet", "very_quiet"):
        return "increase"
    if category in ("loud", "very_loud"):
        return "decrease"
    return None


def check_category(category: str) -> str:
    """Return ``category`` unchanged or raise ValueError naming the valid ones."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    return category


@dataclass(frozen=True)
class Label:
    """What a response says: the flaw category, the stem to change and the signed correction.

    ``stem`` and ``correction_db`` are None for ``no_error``.
    """

    category: str
    stem: str | None = None
    correction_db: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_category(self.category)
        if self.category == "no_error":
            if self.stem is not None or self.correction_db is not None:
                raise ValueError("a no_error label has no stem and no correction")
        else:
            if self.stem not in TARGET_STEMS:
                raise ValueError(f"stem {self.stem!r} cannot carry a flaw; expected one of {TARGET_STEMS}")
            if self.correction_db is None:
                raise ValueError(f"a {self.category} label needs a correction_db range")

    @classmethod
    def for_flaw(cls, category: str, stem: str | None) -> "Label":
        """The correct label for a flaw of ``category`` on ``stem`` (stem ignored for no_error)."""
        if check_category(category) == "no_error":
            return cls("no_error")
        return cls(category, stem, CORRECTION_DB[category])

    @property
    def direction(self) -> str | None:
        """'increase', 'decrease' or None."""
        return direction_of(self.category)
