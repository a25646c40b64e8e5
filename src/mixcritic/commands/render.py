"""`mixcritic render` (not implemented yet)."""

from __future__ import annotations

from mixcritic.errors import MixcriticError


def render() -> None:
    """Not implemented yet."""
    raise MixcriticError("'render' is not implemented yet.")
