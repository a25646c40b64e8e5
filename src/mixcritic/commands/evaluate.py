"""`mixcritic evaluate` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def evaluate() -> None:
    """Not implemented yet."""
    raise MixcriticError("'evaluate' is not implemented yet.")
