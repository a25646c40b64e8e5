"""The ``mixcritic`` command-line application.

Each command lives in ``mixcritic/commands/<name>.py`` as a thin function: it checks options,
calls one library function and renders the result. Command modules import only light modules at
import time, so ``mixcritic --help`` never loads torch, transformers or bitsandbytes.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Callable

import typer

from mixcritic import __version__
from mixcritic.commands import critique, demo, evaluate, render, synth, toy_stems, train
from mixcritic.errors import Interrupted, MixcriticError

app = typer.Typer(
    name="mixcritic",
    help=(
        "Listens to a mix and says, in words, which stem is out of balance and by how many dB.\n\n"
        "Steps: toy-stems (or MUSDB18-HQ) -> synth -> train -> critique / evaluate. "
        "Each command's --help has examples.\n\n"
        "Examples (the first runs everything offline on toy songs):\n\n"
        "\b\n"
        "  mixcritic demo\n"
        "  mixcritic critique ./my-song-stems --anchor vocals --model RUN"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _debug() -> bool:
    return os.environ.get("MIXCRITIC_DEBUG", "") not in ("", "0")


def user_errors(func: Callable) -> Callable:
    """Turn project errors into ``Error: ...`` on stderr and a non-zero exit, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MixcriticError as exc:
            if _debug():
                raise
            from mixcritic.console import stderr

            from rich.text import Text

            stderr.print(Text("Error: ", style="bold red") + Text(str(exc)), soft_wrap=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            if _debug():
                raise
            hint = exc.hint if isinstance(exc, Interrupted) else "Completed outputs are kept; re-run the same command to resume."
            print(f"Interrupted. {hint}", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mixcritic {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """mixcritic: gain-balance advice for multitrack mixes."""


for _name, _func in [
    ("toy-stems", toy_stems.toy_stems),
    ("synth", synth.synth),
    ("render", render.render),
    ("train", train.train),
    ("critique", critique.critique),
    ("evaluate", evaluate.evaluate),
    ("demo", demo.demo),
]:
    app.command(_name)(user_errors(_func))


def main() -> None:
    """Console-script entry point."""
    app()


os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no third-party bars leak into our stderr
