"""`mixcritic critique` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def critique() -> None:
    """Not implemented yet."""
    raise MixcriticError("'critique' is not implemented yet.")
