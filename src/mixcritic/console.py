"""Output channels: results go to stdout, progress/warnings/errors go to stderr."""

from __future__ import annotations

from rich.console import Console

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    from rich.markup import escape

    stderr.print(f"[yellow]Warning:[/yellow] {escape(message)}", soft_wrap=True)


def info(message: str) -> None:
    """Print a one-line status message on stderr."""
    stderr.print(message, soft_wrap=True)


def print_json(data) -> None:
    """Print ``data`` as indented JSON on stdout, and nothing else (the ``--json`` channel)."""
    import json

    print(json.dumps(data, indent=2), flush=True)
