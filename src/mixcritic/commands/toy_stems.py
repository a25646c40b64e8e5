"""`mixcritic toy-stems` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def toy_stems() -> None:
    """Not implemented yet."""
    raise MixcriticError("'toy-stems' is not implemented yet.")
