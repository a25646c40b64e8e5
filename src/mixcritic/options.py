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
