"""`mixcritic demo` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def demo() -> None:
    """Not implemented yet."""
    raise MixcriticError("'demo' is not implemented yet.")
