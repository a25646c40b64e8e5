"""The two critics behind one interface.

``critique`` and ``evaluate`` never branch on the engine: they build :class:`Segment` objects and
ask a :class:`Critic` for one :class:`Judgement` each.

- ``critics/measured/``: the **measured** critic. Reads the separate stems, compares each stem's
  level relative to the others with a fitted model of natural balance. CPU, seconds, no torch.
  Ships built in (``load_critic("builtin")``).
- ``critics/llm/``: the **LLM** critic (the paper): MERT -> projector -> Qwen2 with QLoRA. Hears
  only the mix. ``critics/llm/train.py`` trains it, ``critics/llm/inference.py`` generates.

Contract::

    critic = load_critic(model, device="auto")     # "builtin" or a run folder; reads mixcritic.json
    critic.engine        # "measured" | "llm"
    critic.needs_stems   # True when answers need the separate stems (measured)
    critic.settings      # sample_rate_hz, segment_s, target_lufs, ... (+ engine-specific fields)
    critic.describe()    # one plain line saying which critic speaks
    critic.judge(segments) -> list[Judgement]   # one per segment, in order

This module imports nothing heavy: torch is imported only by the LLM engine, when it loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mixcritic.labels import Label

ENGINES = ("measured", "llm")
"""Engine names, as written in ``RUN/model/mixcritic.json`` (``"engine"``; a file without it is ``llm``)."""

BUILTIN = "builtin"
"""The ``--model`` value that selects the measured critic shipped with the package."""


@dataclass(frozen=True)
class Segment:
    """One clip to judge: what each engine may look at."""

    mix: np.ndarray | None
    """``(samples,)`` float32 24 kHz mono, loudness-normalised to the critic's ``target_lufs``."""
    stems: dict[str, np.ndarray] | None
    """Per stem ``(samples,)`` float32 24 kHz mono at the gains heard in ``mix`` (before
    normalisation); None when only a mixed file exists."""
    anchor_stem: str
    """The stem the user treats as correct."""
    instruction: str
    """The rendered instruction (what the LLM reads)."""
    stems_present: tuple[str, ...] = ()
    """Stems active in the clip (training's gate)."""


@dataclass(frozen=True)
class Judgement:
    """A critic's answer to one segment."""

    label: Label | None
    """The parsed answer; None when the text could not be read."""
    text: str
    """The answer in words."""
    confidence: float | None = None
    """Probability of ``label`` under the critic's model, in [0, 1]; None when it has none (LLM)."""
    probabilities: dict[str, float] = field(default_factory=dict)
    """Optional named probabilities, e.g. ``{"no_error": 0.12}``."""


class Critic(Protocol):
    """What ``critique`` and ``evaluate`` need from either engine."""

    engine: str
    needs_stems: bool

    @property
    def settings(self) -> dict: ...

    def describe(self) -> str: ...

    def judge(self, segments: list[Segment]) -> list[Judgement]: ...
