"""`mixcritic train` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def train() -> None:
    """Not implemented yet."""
    raise MixcriticError("'train' is not implemented yet.")
