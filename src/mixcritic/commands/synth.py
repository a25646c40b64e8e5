"""`mixcritic synth` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def synth() -> None:
    """Not implemented yet."""
    raise MixcriticError("'synth' is not implemented yet.")
