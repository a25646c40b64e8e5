"""Command-line options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SeedOption = Annotated[int, typer.Option("--seed", help="Random seed; same inputs + same seed give identical outputs.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout (progress and warnings go to stderr).")]
WorkersOption = Annotated[int, typer.Option("--workers", min=1, help="Worker processes for audio work.")]
SegmentOption = Annotated[float, typer.Option("--segment-s", min=1.0, help="Segment (chunk) length in seconds.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.")]
DataArgument = Annotated[Path, typer.Argument(metavar="DATA", help="Dataset folder written by `mixcritic synth`.", show_default=False)]

TINY_SCORES = "34-63 % macro Both on held-out toy songs"
"""What a run of the tiny preset measured (three toy datasets; docs/training.md has the table), quoted
by `train --help`, the tiny-run caveats of `critique` and `evaluate`, and the demo."""
TINY_MUTED_SCORES = "10-13 %"
"""The same runs' macro Both with `--mute-audio`."""
WIRING_ONLY = "this run was trained with the tiny preset to check the wiring"
"""How `critique` and `evaluate` begin their caveat about a tiny-preset run."""
