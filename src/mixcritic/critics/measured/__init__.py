"""The measured critic: stem levels relative to each other against a fitted model of natural balance.

- :mod:`.features`: each stem's K-weighted level per frequency band (dB).
- :mod:`.model`: the Gaussian natural balance, the gain-integrated likelihood of each flaw
  hypothesis, the posterior and the decision.
- :mod:`.critic`: :class:`MeasuredCritic` (the ``Critic`` interface), fitting from a ``synth``
  dataset, saving / loading run folders, and the built-in fit (``builtin.json``).

CPU only, seconds; imports neither torch nor transformers. See ``docs/measured.md``.
"""

from mixcritic.critics.measured.critic import (
    MeasuredConfig,
    MeasuredCritic,
    fit_measured,
    is_measured_folder,
    load_builtin,
    load_measured,
    save_measured,
)

__all__ = [
    "MeasuredConfig",
    "MeasuredCritic",
    "fit_measured",
    "is_measured_folder",
    "load_builtin",
    "load_measured",
    "save_measured",
]
