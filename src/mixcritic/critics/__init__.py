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
    critic.settings      # sample_rate_hz, segment_s, target_lufs, ... (+ engine-specific fields);
                         # "wiring_only": True for a run that only checks the wiring (tiny preset)
    critic.describe()    # what the critic is, in a few plain words (critic_line adds where it came from)
    critic.judge(segments) -> list[Judgement]   # one per segment, in order

This module imports nothing heavy: torch is imported only by the LLM engine, when it loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from mixcritic.errors import ModelError
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


SETTINGS_FILE = "mixcritic.json"
"""The file in a model folder that names its engine and holds its settings."""


def read_engine(run_dir: Path) -> tuple[str, Path | None]:
    """The engine of a run folder and the folder holding its ``mixcritic.json``.

    Looks in ``run_dir`` itself, then ``run_dir/model``. A file without ``"engine"`` is an LLM run
    (runs written before the measured engine existed). ``("llm", None)`` when neither holds the file
    (e.g. an interrupted LLM run with only ``checkpoint-N/`` folders: the LLM loader finds those).
    """
    for folder in (run_dir, run_dir / "model"):
        path = folder / SETTINGS_FILE
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable ({exc}); re-run `mixcritic train` to write it again") from None
        engine = data.get("engine", "llm") if isinstance(data, dict) else None
        if engine not in ENGINES:
            raise ModelError(f"{path}: unknown engine {engine!r}; this mixcritic knows {', '.join(ENGINES)} (upgrade it?)")
        return engine, folder
    return "llm", None


def model_folder(run_dir: Path) -> Path:
    """The folder whose files make up the model that :func:`load_critic` loads from ``run_dir``."""
    engine, folder = read_engine(Path(run_dir))
    if engine == "measured":
        return folder
    from mixcritic.critics.llm.checkpoint import find_model_folder

    return find_model_folder(Path(run_dir))


def critic_line(model: str | Path | None, critic: Critic) -> str:
    """One plain line saying which critic spoke, e.g. ``critic: built-in, measured stem loudness (fit on 12 songs)``."""
    if model is None:
        return f"critic: {critic.describe()}"
    return f"critic: {'built-in' if str(model) == BUILTIN else model}, {critic.describe()}"


def load_critic(
    model: str | Path,
    device: str = "auto",
    encoder_source: str | None = None,
    llm_source: str | None = None,
) -> Critic:
    """The critic a ``--model`` value names: ``"builtin"`` or a run folder written by ``mixcritic train``.

    Reads the run's ``mixcritic.json`` and returns the engine's implementation. ``device``,
    ``encoder_source`` and ``llm_source`` (local snapshots replacing the base models) apply to
    LLM runs; giving a base model to a measured critic is an error, since it has none.
    """
    if str(model) == BUILTIN:
        engine, folder = "measured", None
    else:
        engine, folder = read_engine(Path(model))
    if engine == "measured":
        if encoder_source or llm_source:
            option = "--encoder" if encoder_source else "--llm"
            raise ModelError(
                f"{option} applies to an LLM run, but {model} is a measured critic (it has no base model); drop {option}"
            )
        from mixcritic.critics import measured

        return measured.load_builtin() if folder is None else measured.load_measured(folder)
    from mixcritic.critics.llm.inference import load_llm_critic

    return load_llm_critic(Path(model), device=device, encoder_source=encoder_source, llm_source=llm_source)
